"""Text classification: a Hugging Face classifier distilled into small students (see pipeline.py)."""
