"""Causal language models: next-token distillation (online, top-k cache, sequences, on-policy); pipeline.py is the run."""
