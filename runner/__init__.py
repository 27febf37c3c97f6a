"""runner: a Celery-compatible task queue and declarative pipeline runner.

Public API only; ``from runner import Celery`` is the drop-in for ``from celery import Celery``.
"""

from __future__ import annotations

__version__ = "0.1.0"
