"""chord: a group whose results, once all are in, go to one more task, with Celery's semantics
(see ``runner.canvas.flow`` for how the worker counts the parts and sends the body)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

from runner.canvas.primitives import (
    _app_of,
    _flatten,
    _own_options,
    _prepared,
    _set_parent,
    chain,
    group,
)
from runner.canvas.signature import Signature, maybe_signature, merge_options, new_id
from runner.message import Message
from runner.result import AsyncResult, GroupResult

STREAM_BATCH = 100  # header messages published per round trip for a generator header


class chord(Signature):  # noqa: N801 - Celery's name
    """A group whose results, once all are in, go to one more task: ``chord(header)(body)``.
    Without a body (a group that must report as one value), the list of results is the
    chord's own result."""

    def __init__(self, header: Any, body: Any = None, app: Any = None,
                 header_id: str | None = None, **options: Any):
        lazy: Iterator | None = None
        if isinstance(header, group):
            tasks = header.tasks
            header_id = header_id or header.id
        elif isinstance(header, Signature):  # one signature (a chain, a task)
            tasks = [header]
        elif isinstance(header, (list, tuple)):  # noqa: UP038
            tasks = list(header)
        else:  # a generator: consumed as it is sent
            lazy, tasks = iter(header), []
        tasks = _flatten([maybe_signature(t, app=app).clone() for t in tasks])
        body = maybe_signature(body, app=app)
        super().__init__("celery.chord", (), {}, options, subtask_type="chord",
                         app=app or _app_of([*tasks, *([body] if body else [])]))
        self["kwargs"] = {"header": tasks, "body": body.clone() if body else None,
                          "header_id": header_id}
        self._lazy = lazy

    _lazy: Iterator | None = None

    def _wrap(self) -> None:
        kwargs = self["kwargs"]
        kwargs["header"] = [maybe_signature(t, app=self._app) for t in kwargs["header"]]
        kwargs["body"] = maybe_signature(kwargs.get("body"), app=self._app)

    def _materialize(self) -> None:
        if self._lazy is not None:
            more = _flatten([maybe_signature(t, app=self._app).clone() for t in self._lazy])
            self["kwargs"]["header"] += more
            self._lazy = None

    def __deepcopy__(self, memo: dict) -> Signature:
        self._materialize()
        return super().__deepcopy__(memo)

    @property
    def tasks(self) -> list[Signature]:
        self._materialize()
        return self["kwargs"]["header"]

    @property
    def body(self) -> Signature | None:
        return self["kwargs"]["body"]

    @body.setter
    def body(self, value: Any) -> None:
        self["kwargs"]["body"] = maybe_signature(value, app=self._app)

    def __repr__(self) -> str:
        header = ", ".join(map(repr, self["kwargs"]["header"]))
        return f"chord([{header}], {self.body!r})"

    def __call__(self, body: Any = None, **options: Any) -> Any:
        if body is not None:
            self.body = body
        return self.apply_async((), {}, **options)

    def __or__(self, other: Any) -> Any:
        if isinstance(other, Signature) and not isinstance(other, (chain, group)):  # noqa: UP038
            sig = self.clone()
            sig.body = other if sig.body is None else sig.body | other
            return sig
        return super().__or__(other)

    def __len__(self) -> int:  # type: ignore[override]
        return len(self.tasks)

    def __bool__(self) -> bool:
        return True

    def freeze(self, _id: str | None = None, group_id: str | None = None,
               chord: dict | None = None, root_id: str | None = None,
               parent_id: str | None = None, group_index: int | None = None) -> Any:
        """The body's result (for a chord without body, the joined list's), whose
        ``parent`` is the header's GroupResult."""
        kwargs = self["kwargs"]
        header_id = kwargs["header_id"] = kwargs.get("header_id") or new_id()
        header = GroupResult(header_id, [t.freeze() for t in self.tasks], app=self.app)
        if self.body is not None:
            result = self.body.freeze(_id)
        else:
            if _id is not None:
                self["options"]["task_id"] = _id
            result = AsyncResult(self["options"].setdefault("task_id", new_id()),
                                 app=self.app)
        self["options"]["task_id"] = result.id
        _set_parent(result, header)
        return result

    def _attach(self, tail: dict) -> Signature:
        if self.body is not None:
            self.body = self.body._attach(tail)
        else:
            merge_options(self["kwargs"].setdefault("tail", {}), tail)
        return self

    def _result_ids(self) -> list[str]:
        ids = [i for t in self.tasks for i in t._result_ids()]
        return ids + (self.body._result_ids() if self.body is not None else [self.id or ""])

    def _finals(self) -> list[dict]:
        if self.body is not None:
            return self.body._finals()
        return [self["kwargs"].get("tail") or {}]

    def link(self, callback: dict) -> dict:
        if self.body is None:
            merge_options(self["kwargs"].setdefault("tail", {}), {"link": [callback]})
        else:
            self.body.link(callback)
        return callback

    def link_error(self, errback: dict) -> dict:
        """On the body (it fails once, with ChordError, if a header part failed); with
        ``task_allow_error_cb_on_chord_header`` on the header's tasks too."""
        errback = maybe_signature(errback, app=self._app)
        if self.app.conf.task_allow_error_cb_on_chord_header:
            for task in self.tasks:
                task.link_error(errback.clone(immutable=True))
        if self.body is None:
            merge_options(self["kwargs"].setdefault("tail", {}), {"link_error": [errback]})
        else:
            self.body.link_error(errback)
        return errback

    def set_immutable(self, immutable: bool) -> None:
        for task in self.tasks:
            task.set_immutable(immutable)

    def _meta(self, size: int | None) -> dict:
        return {"size": size, "id": self.id, "body": self.body,
                "tail": self["kwargs"].get("tail") or {}}

    def _split(self, options: dict) -> tuple[chord, dict]:
        sig, options = _prepared(self, options)
        own = _own_options(sig, options)
        errbacks = own.pop("link_error", None)
        for errback in errbacks or ():
            sig.link_error(errback)
        return sig, own

    def _part(self, task: Signature, index: int, meta: dict) -> Signature:
        return task._attach({"group_id": self["kwargs"]["header_id"], "group_index": index,
                             "chord": meta})

    def _messages(self, args: Iterable | None, kwargs: dict | None,
                  options: dict) -> list[Message]:
        sig, own = self._split(options)
        sig.app.backend.ensure_chords_allowed()  # (rpc:// cannot count: said here, not later)
        tasks = sig.tasks
        if not tasks:
            return sig._empty(own)
        meta = sig._meta(len(tasks))
        messages: list[Message] = []
        for index, task in enumerate(tasks):
            messages += sig._part(task, index, meta)._messages(args, kwargs, own)
        return messages

    def _empty(self, options: dict) -> list[Message]:
        """A chord with no header: the body gets ``[]`` now."""
        if self.body is not None:
            return self.body._messages(([],), None, options)
        from runner.canvas.flow import finish_join

        finish_join(self.app, self._meta(0), [], None)
        return []

    def apply_async(self, args: Iterable | None = None, kwargs: dict | None = None,
                    **options: Any) -> Any:
        if self._lazy is None or self.app.conf.task_always_eager:
            return Signature.apply_async(self, args, kwargs, **options)
        return self._stream(args, kwargs, options)

    def _stream(self, args: Iterable | None, kwargs: dict | None, options: dict) -> Any:
        """A generator header: each part is frozen and sent as the generator yields it (in
        batches), then the chord's size is stored; the count completes on whichever comes
        last, the size or the last part."""
        from runner.canvas.flow import chord_size_known

        lazy, self._lazy = self._lazy, None
        options = {k: v for k, v in options.items() if v is not None}
        task_id = options.pop("task_id", None)
        sig, own = self._split(options)
        result = sig.freeze(task_id)
        meta = sig._meta(None)
        app, index = self.app, 0
        for batch in iter(lambda: list(itertools.islice(lazy, STREAM_BATCH)), []):
            messages: list[Message] = []
            for task in _flatten([maybe_signature(t, app=self._app).clone() for t in batch]):
                result.parent.results.append(task.freeze())
                messages += sig._part(task, index, meta)._messages(args, kwargs, own)
                index += 1
            app.publish(messages)
        if index == 0:
            app.publish(sig._empty(own))
        else:
            chord_size_known(app, sig["kwargs"]["header_id"], index, meta)
        return result

    def apply(self, args: Iterable | None = None, kwargs: dict | None = None,
              **options: Any) -> Any:
        """Header then body, here (eager); a failed header part fails the body."""
        sig = self.clone()
        header = group(sig.tasks, app=self._app).apply(args, kwargs)
        values = header.get(propagate=True, disable_sync_subtasks=False)
        if sig.body is None:
            from runner.result import EagerResult
            return EagerResult(sig.id or Message.new_id(), values, "SUCCESS", app=self.app)
        result = sig.body.apply((values,), **options)
        _set_parent(result, header)
        return result
