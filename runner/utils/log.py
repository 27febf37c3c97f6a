"""Celery's ``celery.utils.log`` names, so the import line is all that changes."""

from runner.log import TASK_LOGGER, get_task_logger

__all__ = ["TASK_LOGGER", "get_task_logger"]
