"""runner: a Celery-compatible task queue and declarative pipeline runner.

Public API only; ``from runner import Celery`` is the drop-in for ``from celery import Celery``.
"""

from __future__ import annotations

from runner.version import __version__  # noqa: E402

from runner import states  # noqa: E402
from runner.app import Celery, Runner, current_app  # noqa: E402
from runner.result import AsyncResult, EagerResult  # noqa: E402
from runner.task import Task  # noqa: E402

__all__ = ["AsyncResult", "Celery", "EagerResult", "Runner", "Task", "current_app", "states",
           "__version__"]
