"""Where Celery keeps ``celery.utils.log``: ``from runner.utils.log import get_task_logger``."""
