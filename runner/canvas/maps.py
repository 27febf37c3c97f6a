"""chunks, xmap, xstarmap: many calls of one task in few messages, as Celery's (run by the
built-in tasks ``celery.starmap`` / ``celery.map``, see ``runner.canvas.builtins``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from runner.canvas.primitives import group
from runner.canvas.signature import Signature, maybe_signature
from runner.exceptions import RunnerError


class chunks(Signature):  # noqa: N801 - Celery's name
    """``add.chunks(zip(range(100), range(100)), 10)``: the calls split into tasks of ``n``
    calls each (a group of ``xstarmap``)."""

    def __init__(self, task: Any, it: Iterable, n: int, app: Any = None, **options: Any):
        task = maybe_signature(task, app=app) if isinstance(task, dict) else task
        super().__init__("celery.chunks", (), {"task": dict(task.s() if hasattr(task, "s")
                                                            else task),
                                               "it": [list(x) for x in it], "n": int(n)},
                         options, immutable=True, subtask_type="chunks",
                         app=app or getattr(task, "app", None) or getattr(task, "_app", None))

    def __call__(self, **options: Any) -> Any:
        return self.apply_async(**options)

    def group(self) -> group:
        task, it, n = self["kwargs"]["task"], self["kwargs"]["it"], self["kwargs"]["n"]
        parts = [it[i:i + n] for i in range(0, len(it), n)]
        return group([xstarmap(task, part, app=self._app) for part in parts], app=self._app,
                     **self["options"])

    def apply_async(self, args: Iterable | None = None, kwargs: dict | None = None,
                    **options: Any) -> Any:
        return self.group().apply_async(args, kwargs, **options)

    def apply(self, args: Iterable | None = None, kwargs: dict | None = None,
              **options: Any) -> Any:
        return self.group().apply(args, kwargs, **options)

    def freeze(self, *args: Any, **kwargs: Any) -> Any:
        raise RunnerError("chunks: freeze its group() (chunks(...).group().freeze())")

    @classmethod
    def apply_chunks(cls, task: Any, it: Iterable, n: int, app: Any = None) -> Any:
        return cls(task, it, n, app=app)()


class _basemap(Signature):
    _task_name = ""

    def __init__(self, task: Any, it: Iterable, app: Any = None, **options: Any):
        task = maybe_signature(task, app=app) if isinstance(task, dict) else task
        super().__init__(self._task_name, (), {"task": dict(task.s() if hasattr(task, "s")
                                                            else task),
                                               "it": [_plain(x) for x in it]},
                         options, immutable=True, subtask_type=type(self).__name__,
                         app=app or getattr(task, "app", None) or getattr(task, "_app", None))


def _plain(item: Any) -> Any:
    """An item as JSON can carry it: tuples, ranges, sets and iterators as lists."""
    if isinstance(item, (tuple, range, set, frozenset)) or hasattr(item, "__next__"):  # noqa: UP038
        return list(item)
    return item


class xmap(_basemap):  # noqa: N801 - Celery's name
    """``add.map([1, 2, 3])``: one task calling ``task(x)`` for each x, in turn."""

    _task_name = "celery.map"


class xstarmap(_basemap):  # noqa: N801 - Celery's name
    """``add.starmap([(2, 2), (4, 4)])``: one task calling ``task(*x)`` for each x."""

    _task_name = "celery.starmap"
