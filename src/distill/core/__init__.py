"""Task-agnostic machinery every task shares: the task table (``task.py``), the run directory's
lifecycle (``rundir.py``), logging, checkpoints, and the thread and seed context managers."""
