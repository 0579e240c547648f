"""The tasks, one package each: its pipeline (an explicit script), its loop, its post-run commands and
its report. The table of tasks is ``distill.core.task.TASKS``; a task never imports another task."""
