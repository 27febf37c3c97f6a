# This makes sure the app is loaded when the project starts, so that @shared_task uses it.
from .celery import app as celery_app

__all__ = ("celery_app",)
