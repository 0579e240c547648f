"""Classification (images, tables): a teacher's soft labels into a small student; pipeline.py is the run."""
