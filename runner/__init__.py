"""runner: a Celery-compatible task queue and declarative pipeline runner.

Public API only; ``from runner import Celery`` is the drop-in for ``from celery import Celery``.
"""

from __future__ import annotations

from runner import signals, states
from runner.app import Celery, Runner, current_app
from runner.canvas import (
    Signature,
    chain,
    chord,
    chunks,
    group,
    maybe_signature,
    signature,
    subtask,
    xmap,
    xstarmap,
)
from runner.result import AsyncResult, EagerResult, GroupResult, ResultSet
from runner.shared import shared_task
from runner.task import Task, current_task
from runner.version import __version__

__all__ = ["AsyncResult", "Celery", "EagerResult", "GroupResult", "ResultSet", "Runner",
           "Signature", "Task", "chain", "chord", "chunks", "current_app", "current_task",
           "group", "maybe_signature", "shared_task", "signals", "signature", "states",
           "subtask", "xmap", "xstarmap", "__version__"]
