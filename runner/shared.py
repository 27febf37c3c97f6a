"""``@shared_task``: tasks of no app in particular, made on every app of the process (those
made before and after), as Django projects' reusable apps write them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runner import _state

if TYPE_CHECKING:  # pragma: no cover
    from runner.task import Task


class _SharedTask(_state.Proxy):
    """A shared task, as its module sees it: the current app's task of that name (calling it
    runs the task, as calling a task does)."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._get()(*args, **kwargs)


def shared_task(*args: Any, **options: Any) -> Any:
    """Celery's ``@shared_task``: a task of no app in particular. It is made on every app of
    the process, those made before and after; calling it uses the current app's."""
    def share(fun: Callable) -> Any:
        _state.shared_tasks.append((fun, dict(options)))
        for app in list(_state.apps):
            app._add_shared(fun, options)
        name = options.get("name") or f"{fun.__module__}.{fun.__name__}"

        def task() -> Task:
            app = _state.current_app()
            if name not in app.tasks:
                app._add_shared(fun, options)
            return app.tasks[name]
        return _SharedTask(task, f"shared task {name}")

    if len(args) == 1 and callable(args[0]) and not options:
        return share(args[0])
    if args:
        raise TypeError("@shared_task takes keyword options only: @shared_task(bind=True)")
    return share
