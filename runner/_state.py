"""The current app of this process, kept apart so that low modules can find it without
importing ``runner.app`` (which imports them)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_lock = threading.Lock()
_current: Any = None
#: builds the default app when none was created; set by runner.app on import
default_app_factory: Callable[[], Any] | None = None


def set_current_app(app: Any) -> None:
    global _current
    with _lock:
        _current = app


def current_app() -> Any:
    """The app created last in this process (a default one if none was)."""
    global _current
    with _lock:
        if _current is None:
            if default_app_factory is None:
                raise RuntimeError("no runner app: create one with Celery('name')")
            _current = default_app_factory()
        return _current
