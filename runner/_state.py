"""The current app of this process, kept apart so that low modules can find it without
importing ``runner.app`` (which imports them)."""

from __future__ import annotations

import contextvars
import threading
import weakref
from collections.abc import Callable
from typing import Any

_lock = threading.RLock()  # (making the default app sets it as current: re-entered)
_current: Any = None
#: builds the default app when none was created; set by runner.app on import
default_app_factory: Callable[[], Any] | None = None


_running_tasks: contextvars.ContextVar[list[Any]] = contextvars.ContextVar("runner_running")


class _Running:
    """Per thread, and per asyncio task where an asyncio pool gives each job a fresh stack
    (:func:`fresh_stacks`): context variables, which a new thread starts without."""

    __slots__ = ()

    @property
    def tasks(self) -> list[Any]:  # innermost last
        tasks = _running_tasks.get(None)
        if tasks is None:
            tasks = []
            _running_tasks.set(tasks)
        return tasks

    def fresh(self) -> None:
        """A stack of its own for the current context (an asyncio task running a job)."""
        _running_tasks.set([])


#: the tasks running in this thread or asyncio task (``current_task``; task log lines name the
#: last one)
running = _Running()

#: every app made in this process, and the functions given to ``shared_task``: each app gets
#: each shared task, whichever was made first (as Celery's)
apps: weakref.WeakSet = weakref.WeakSet()
shared_tasks: list[tuple[Callable, dict]] = []


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


class Proxy:
    """Celery's proxies (``current_app``, ``current_task``): attribute access goes to what
    ``get()`` returns now; calling the proxy returns that object itself."""

    __slots__ = ("_get", "_name")

    def __init__(self, get: Callable[[], Any], name: str):
        object.__setattr__(self, "_get", get)
        object.__setattr__(self, "_name", name)

    def __call__(self) -> Any:
        return self._get()

    def __getattr__(self, attr: str) -> Any:
        target = self._get()
        if target is None:
            raise AttributeError(f"{self._name} is None here (no task is running), so it has "
                                 f"no attribute {attr!r}")
        return getattr(target, attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        setattr(self._get(), attr, value)

    def __bool__(self) -> bool:
        return self._get() is not None

    def __eq__(self, other: object) -> bool:
        return self._get() == (other._get() if isinstance(other, Proxy) else other)

    def __hash__(self) -> int:
        return hash(self._get())

    def __repr__(self) -> str:
        return repr(self._get())
