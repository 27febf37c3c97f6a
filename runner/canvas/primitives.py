"""The canvas primitives: chain, group, chord, and chunks / xmap / xstarmap, with Celery's
semantics, any of them inside any other (see ``runner.canvas.signature`` for how a canvas is
frozen, given its tail and turned into messages).

- ``chain(a, b, c)`` / ``a | b | c``: each result is prepended to the next task's args (unless
  it is immutable, ``.si()``); a failure stops the chain and is stored as the result of every
  later step. A group followed by anything in a chain is a chord; a chain ending in a group
  returns that group's :class:`GroupResult`.
- ``group(...)`` sends every task in one round trip; nested groups are flattened, as Celery
  does; a group that must report as one value (a chain step, a chord header part) becomes a
  chord whose "body" joins the values into a list.
- ``chord(header, body)``: the body gets the header's results, in header order, once every
  part has finished, counted in the result backend as a set of finished parts (see
  ``runner.canvas.flow``). A header may be a generator: it is consumed as it is sent.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

from runner.canvas.signature import (
    Signature,
    maybe_signature,
    merge_options,
    split_tail,
)
from runner.exceptions import RunnerError
from runner.message import Message
from runner.result import AsyncResult, GroupResult

STREAM_BATCH = 100  # header messages published per round trip for a generator header


def _app_of(tasks: Iterable[Any]) -> Any:
    return next((t._app for t in tasks if getattr(t, "_app", None)), None)


def _own_options(sig: Signature, options: dict) -> dict:
    """The canvas's own options (its id and tail aside) with the call's on top."""
    own = {k: v for k, v in sig["options"].items() if k != "task_id"}
    own = split_tail(own)[1]
    return merge_options(own, options)


def _prepared(sig: Signature, options: dict) -> tuple[Signature, dict]:
    """The tail options of a call attached to ``sig`` (which may become another canvas: a
    group that must report as one value becomes a chord), and the call's other options."""
    tail, options = split_tail(options)
    own_tail = split_tail(sig["options"])[0]
    if own_tail:
        for key in own_tail:
            sig["options"].pop(key, None)
        sig = sig._attach(own_tail)
    if tail:
        sig = sig._attach(tail)
    return sig, options


class chain(Signature):  # noqa: N801 - Celery's name
    """Tasks run one after the other, each getting the previous result."""

    def __init__(self, *tasks: Any, app: Any = None, **options: Any):
        if len(tasks) == 1 and not isinstance(tasks[0], dict):
            tasks = tuple(tasks[0])
        flat: list[Signature] = []
        for task in tasks:
            task = maybe_signature(task, app=app)
            if isinstance(task, chain) and not task.options:
                flat += [t.clone() for t in task.tasks]
            else:
                flat.append(task.clone())
        super().__init__("celery.chain", (), {}, options, subtask_type="chain",
                         app=app or _app_of(flat))
        self["kwargs"] = {"tasks": flat}

    def _wrap(self) -> None:
        self["kwargs"]["tasks"] = [maybe_signature(t, app=self._app)
                                   for t in self["kwargs"]["tasks"]]

    @property
    def tasks(self) -> list[Signature]:
        return self["kwargs"]["tasks"]

    def __or__(self, other: Any) -> Any:
        if isinstance(other, chain) and not other.options:
            return chain(*self.tasks, *other.tasks, app=self._app, **self.options)
        if isinstance(other, Signature):
            return chain(*self.tasks, other, app=self._app, **self.options)
        return NotImplemented

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    def _steps(self) -> list[Signature]:
        """The steps as they run: chunks as groups, ``group | x`` as chords (in place)."""
        out: list[Signature] = []
        for task in self.tasks:
            if isinstance(task, chunks):
                task = task.group()
            if out and isinstance(out[-1], group):
                out.append(chord(out.pop(), task, app=self._app))
            else:
                out.append(task)
        self["kwargs"]["tasks"] = out
        return out

    def freeze(self, _id: str | None = None, group_id: str | None = None,
               chord: dict | None = None, root_id: str | None = None,
               parent_id: str | None = None, group_index: int | None = None) -> Any:
        """Fix every step's id; the result is the last step's, its ``parent`` the one before
        (and so on), as Celery's."""
        steps = self._steps()
        if not steps:
            raise RunnerError("an empty chain has nothing to run")
        parent = None
        for index, step in enumerate(steps):
            last = index == len(steps) - 1
            result = step.freeze(_id if last else None)
            if parent is not None:
                _set_parent(result, parent)
            parent = result
        return parent

    def _attach(self, tail: dict) -> Signature:
        steps = self._steps()
        steps[-1] = steps[-1]._attach(tail)
        return self

    def _result_ids(self) -> list[str]:
        return [i for step in self.tasks for i in step._result_ids()]

    def _finals(self) -> list[dict]:
        return self.tasks[-1]._finals()

    def link(self, callback: dict) -> dict:
        self._steps()[-1].link(callback)
        return callback

    def link_error(self, errback: dict) -> dict:
        for step in self._steps():
            step.link_error(errback)
        return errback

    def _messages(self, args: Iterable | None, kwargs: dict | None,
                  options: dict) -> list[Message]:
        sig, options = _prepared(self, options)
        if not isinstance(sig, chain):
            return sig._messages(args, kwargs, options)
        own = _own_options(sig, options)
        errbacks = own.pop("link_error", None)
        steps = sig._steps()
        for errback in errbacks or ():
            for step in steps:
                step.link_error(errback)
        first = steps[0]
        if len(steps) > 1:
            first = first._attach({"chain": steps[1:]})
        return first._messages(args, kwargs, own)

    def apply(self, args: Iterable | None = None, kwargs: dict | None = None,
              **options: Any) -> Any:
        """Each step here, in turn (eager); a failed step's error is raised when the next
        one would get its value, as Celery's."""
        steps = self.clone()._steps()
        result = steps[0].apply(args, kwargs, **options)
        for step in steps[1:]:
            parent, result = result, step.apply((result.get(),))
            _set_parent(result, parent)
        return result


class group(Signature):  # noqa: N801 - Celery's name
    """Tasks run in parallel; ``apply_async`` sends them all in one round trip."""

    def __init__(self, *tasks: Any, app: Any = None, **options: Any):
        if len(tasks) == 1 and not isinstance(tasks[0], dict):
            tasks = tuple(tasks[0])
        members = [maybe_signature(t, app=app).clone() for t in tasks]
        super().__init__("celery.group", (), {}, options, subtask_type="group",
                         app=app or _app_of(members))
        self["kwargs"] = {"tasks": _flatten(members)}

    def _wrap(self) -> None:
        self["kwargs"]["tasks"] = [maybe_signature(t, app=self._app)
                                   for t in self["kwargs"]["tasks"]]

    @property
    def tasks(self) -> list[Signature]:
        return self["kwargs"]["tasks"]

    def __len__(self) -> int:  # type: ignore[override]
        return len(self.tasks)

    def __bool__(self) -> bool:
        return True

    def __or__(self, other: Any) -> Any:
        if isinstance(other, (chain, group)):  # noqa: UP038
            return chain(self, other, app=self._app)
        if isinstance(other, Signature):
            return chord(self, other, app=self._app)
        return NotImplemented

    def __call__(self, *args: Any, **options: Any) -> Any:
        return self.apply_async(args, **options)

    def skew(self, start: float = 1.0, stop: float | None = None,
             step: float = 1.0) -> group:
        """Spread the tasks out in time: countdowns start, start+step, ..."""
        for index, task in enumerate(self.tasks):
            countdown = start + index * step
            task.set(countdown=countdown if stop is None else min(countdown, stop))
        return self

    def freeze(self, _id: str | None = None, group_id: str | None = None,
               chord: dict | None = None, root_id: str | None = None,
               parent_id: str | None = None, group_index: int | None = None) -> GroupResult:
        options = self["options"]
        if _id is not None:
            options["task_id"] = _id
        group_id = options.setdefault("task_id", Message.new_id())
        return GroupResult(group_id, [t.freeze() for t in self.tasks], app=self.app)

    def _attach(self, tail: dict) -> Signature:
        if tail.get("chain") or tail.get("chord") or tail.get("group_id"):
            return chord(self, None, app=self._app, header_id=self.id)._attach(tail)
        if tail.get("link"):  # as Celery: to the first task, immutable
            for link in tail["link"]:
                self.tasks[0].link(maybe_signature(link, app=self._app).clone(immutable=True))
        return self

    def _result_ids(self) -> list[str]:
        return [i for t in self.tasks for i in t._result_ids()]

    def _finals(self) -> list[dict]:
        return [f for t in self.tasks for f in t._finals()]

    def set_immutable(self, immutable: bool) -> None:
        for task in self.tasks:
            task.set_immutable(immutable)

    def link(self, callback: dict) -> dict:
        self._attach({"link": [callback]})
        return callback

    def link_error(self, errback: dict) -> dict:
        for task in self.tasks:
            task.link_error(maybe_signature(errback, app=self._app).clone())
        return errback

    def _messages(self, args: Iterable | None, kwargs: dict | None,
                  options: dict) -> list[Message]:
        sig, options = _prepared(self, options)
        if not isinstance(sig, group):
            return sig._messages(args, kwargs, options)
        own, group_id = _own_options(sig, options), sig.id
        errbacks = own.pop("link_error", None)
        messages: list[Message] = []
        for index, task in enumerate(sig.tasks):
            for errback in errbacks or ():
                task.link_error(errback)
            if not task["options"].get("group_id"):
                task = task._attach({"group_id": group_id, "group_index": index})
            messages += task._messages(args, kwargs, own)
        return messages

    def apply_async(self, args: Iterable | None = None, kwargs: dict | None = None,
                    **options: Any) -> Any:
        group_id = options.pop("group_id", None)  # (Celery's name for the group's own id)
        sig = self.clone()
        if group_id and not sig.id:
            sig["options"]["task_id"] = group_id
        return Signature.apply_async(sig, args, kwargs, **options)

    def apply(self, args: Iterable | None = None, kwargs: dict | None = None,
              **options: Any) -> GroupResult:
        sig = self.clone()
        result = sig.freeze()
        return GroupResult(result.id, [t.apply(args, kwargs, **{**options, "task_id": r.id})
                                       for t, r in zip(sig.tasks, result.results, strict=True)],
                           app=self.app)


def _flatten(members: list[Signature]) -> list[Signature]:
    """Nested groups (without options of their own) unrolled, as Celery does."""
    flat: list[Signature] = []
    for member in members:
        if isinstance(member, group) and not split_tail(member.options)[1]:
            flat += _flatten(member.tasks)
        elif isinstance(member, chunks):
            flat += member.group().tasks
        else:
            flat.append(member)
    return flat


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
        header_id = kwargs["header_id"] = kwargs.get("header_id") or Message.new_id()
        header = GroupResult(header_id, [t.freeze() for t in self.tasks], app=self.app)
        if self.body is not None:
            result = self.body.freeze(_id)
        else:
            if _id is not None:
                self["options"]["task_id"] = _id
            result = AsyncResult(self["options"].setdefault("task_id", Message.new_id()),
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
        if self.app.conf.get("task_allow_error_cb_on_chord_header"):
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
        sig, own = self._split({k: v for k, v in options.items() if v is not None})
        result = sig.freeze()
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
        values = header.get(propagate=True)
        if sig.body is None:
            from runner.result import EagerResult
            return EagerResult(sig.id or Message.new_id(), values, "SUCCESS", app=self.app)
        result = sig.body.apply((values,), **options)
        _set_parent(result, header)
        return result


def _set_parent(result: Any, parent: Any) -> None:
    """Link ``result`` to the one before it; a chord's result to its header's group first."""
    node = result
    while getattr(node, "parent", None) is not None and node.parent is not parent:
        node = node.parent
    if node is not parent:
        node.parent = parent


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
