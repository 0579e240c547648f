"""What differs per task: how to get logits and labels, and the metrics."""
