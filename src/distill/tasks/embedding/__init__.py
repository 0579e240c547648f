"""Sentence embeddings: a sentence-transformers teacher into transformer and static students; pipeline.py is the run."""
