"""The training loop, checkpoints and the run pipeline."""
