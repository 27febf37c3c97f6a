"""Canvas: signatures, chain, group, chord, and link / link_error, with Celery's semantics.

A :class:`Signature` is a dict (task, args, kwargs, options, immutable), so it travels inside a
message as JSON. Workflows move forward in the worker that stores a result, through
:class:`CanvasMiddleware`: no process waits on them.

- ``chain(a.s(1), b.s(), c.s())`` / ``a.s(1) | b.s() | c.s()``: each result is prepended to the
  next task's args (unless the next is immutable, ``.si()``); a failure stops the chain.
- ``group(...)`` sends every task in one round trip and returns a :class:`GroupResult`.
- ``chord(header)(body)``: the body gets the list of header results, in header order, once
  every header task has finished; the count is kept atomically in the result backend, so the
  body is sent exactly once. A failed header task makes the body FAILURE (``ChordError``).
- ``link=`` callbacks get the result prepended; ``link_error=`` errbacks get the failed task's
  id as first argument (use ``AsyncResult(task_id)`` for its exception and traceback).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from runner import _state, serialization, states
from runner.backends.base import ResultRecord
from runner.exceptions import RunnerError
from runner.message import Message
from runner.middleware import Middleware
from runner.result import AsyncResult, GroupResult

logger = logging.getLogger("runner.worker")


class ChordError(RunnerError):
    """A task of a chord's header failed, so its body cannot run."""


class Signature(dict):
    """A task call described as data: ``add.s(2, 2)``, ``signature('tasks.add', (2, 2))``."""

    def __init__(self, task: Any = None, args: Iterable | None = None,
                 kwargs: dict | None = None, options: dict | None = None,
                 immutable: bool = False, subtask_type: str | None = None, app: Any = None,
                 **extra: Any):
        if isinstance(task, dict):  # rebuilding from a message
            super().__init__(copy.deepcopy(task))
        else:
            super().__init__(task=getattr(task, "name", task), args=list(args or ()),
                             kwargs=dict(kwargs or {}), options=dict(options or {}, **extra),
                             immutable=immutable, subtask_type=subtask_type)
        self._app = app or getattr(task, "app", None)

    # -- reading ------------------------------------------------------------------------------

    @property
    def app(self) -> Any:
        return self._app or _state.current_app()

    task = property(lambda self: self["task"])
    args = property(lambda self: self["args"])
    kwargs = property(lambda self: self["kwargs"])
    options = property(lambda self: self["options"])
    immutable = property(lambda self: self["immutable"])

    @property
    def id(self) -> str | None:
        return self["options"].get("task_id")

    def __repr__(self) -> str:
        call = ", ".join([*map(repr, self.args), *(f"{k}={v!r}" for k, v in
                                                    self.kwargs.items())])
        return f"{self.task}({call}){'!' if self.immutable else ''}"

    # -- building -----------------------------------------------------------------------------

    def clone(self, args: Iterable | None = None, kwargs: dict | None = None,
              **options: Any) -> Signature:
        """A copy with ``args`` prepended (unless immutable) and kwargs/options merged."""
        sig = self.__class__.from_dict(copy.deepcopy(dict(self)), app=self._app)
        if not sig.immutable:
            sig["args"] = [*(args or ()), *sig["args"]]
            sig["kwargs"] = {**sig["kwargs"], **(kwargs or {})}
        sig["options"].update(options)
        return sig

    @classmethod
    def from_dict(cls, data: dict, app: Any = None) -> Signature:
        kind = data.get("subtask_type")
        target = {"chain": chain, "group": group, "chord": chord}.get(kind, Signature)
        sig = dict.__new__(target)
        dict.__init__(sig, data)
        sig._app = app
        return sig

    def set(self, **options: Any) -> Signature:
        self["options"].update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self["immutable"] = immutable

    def link(self, callback: Signature) -> Signature:
        self["options"].setdefault("link", []).append(dict(callback))
        return callback

    def link_error(self, errback: Signature) -> Signature:
        self["options"].setdefault("link_error", []).append(dict(errback))
        return errback

    def freeze(self) -> AsyncResult:
        """Fix the task id now, so the result is known before sending."""
        self["options"].setdefault("task_id", Message.new_id())
        return AsyncResult(self.id, app=self.app, task_name=self.task)

    def __or__(self, other: Signature) -> chain:
        if isinstance(other, chain):
            return chain(self, *other.tasks, app=self._app)
        return chain(self, other, app=self._app)

    # -- sending ------------------------------------------------------------------------------

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Iterable | None = None, kwargs: dict | None = None,
                    **options: Any) -> AsyncResult:
        sig = self.clone(args, kwargs, **options)
        task = sig.app.tasks.get(sig.task)
        if task is not None and sig.app.conf.task_always_eager:
            return sig.apply()
        return sig.app.send_task(sig.task, sig.args, sig.kwargs, **sig.options)

    def apply(self, args: Iterable | None = None, kwargs: dict | None = None,
              **options: Any) -> AsyncResult:
        sig = self.clone(args, kwargs, **options)
        return sig.app.get_task(sig.task).apply(sig.args, sig.kwargs, **sig.options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        sig = self.clone(args, kwargs)
        return sig.app.get_task(sig.task)(*sig.args, **sig.kwargs)


def signature(varies: Any, *args: Any, **kwargs: Any) -> Signature:
    """``signature('tasks.add', args=(2, 2))``, or a Signature rebuilt from its dict (bound
    to ``app=``, else to the current app when it is sent)."""
    if isinstance(varies, dict):
        return Signature.from_dict(varies, app=kwargs.get("app"))
    return Signature(varies, *args, **kwargs)


class chain(Signature):  # noqa: N801 - Celery's name
    """Tasks run one after the other, each getting the previous result."""

    def __init__(self, *tasks: Any, app: Any = None, **options: Any):
        if len(tasks) == 1 and not isinstance(tasks[0], dict):
            tasks = tuple(tasks[0])
        flat: list[dict] = []
        for task in tasks:
            flat += task.tasks if isinstance(task, chain) else [task]
        super().__init__("runner.chain", (), {}, options, subtask_type="chain",
                         app=app or next((t._app for t in flat if getattr(t, "_app", None)),
                                         None))
        self["kwargs"] = {"tasks": [dict(t) for t in flat]}

    @property
    def tasks(self) -> list[Signature]:
        return [Signature.from_dict(t, app=self._app) for t in self["kwargs"]["tasks"]]

    def __or__(self, other: Signature) -> chain:
        return chain(*self.tasks, *(other.tasks if isinstance(other, chain) else [other]),
                     app=self._app)

    def apply_async(self, args: Iterable | None = None, kwargs: dict | None = None,
                    **options: Any) -> AsyncResult:
        tasks = self.tasks
        if not tasks:
            raise RunnerError("an empty chain has nothing to run")
        steps = _fold_chords(tasks)
        if self.app.conf.task_always_eager:  # each step in process, as Celery's chain.apply
            result = steps[0].apply_async(args, kwargs, **{**self.options, **options})
            for step in steps[1:]:
                result = step.apply_async((result.get(),))
            return result
        for step in steps:
            step.freeze()
        first, rest = steps[0], steps[1:]
        if rest:
            first["options"]["chain"] = [dict(s) for s in rest]
        first.apply_async(args, kwargs, **{**self.options, **options})
        return AsyncResult(steps[-1].id, app=self.app, task_name=steps[-1].task)

    def __call__(self, *args: Any, **kwargs: Any) -> AsyncResult:
        return self.apply_async(args, kwargs)


def _fold_chords(tasks: list[Signature]) -> list[Signature]:
    """``group | task`` inside a chain is a chord, as in Celery."""
    out: list[Signature] = []
    for task in tasks:
        if out and isinstance(out[-1], group) and not isinstance(task, group):
            header = out.pop()
            out.append(chord(header.tasks, task, app=task._app))
        else:
            out.append(task)
    return out


class group(Signature):  # noqa: N801 - Celery's name
    """Tasks run in parallel; ``apply_async`` sends them all in one round trip."""

    def __init__(self, *tasks: Any, app: Any = None, **options: Any):
        if len(tasks) == 1 and not isinstance(tasks[0], dict):
            tasks = tuple(tasks[0])
        super().__init__("runner.group", (), {}, options, subtask_type="group",
                         app=app or next((t._app for t in tasks if getattr(t, "_app", None)),
                                         None))
        self["kwargs"] = {"tasks": [dict(t) for t in tasks]}

    @property
    def tasks(self) -> list[Signature]:
        return [Signature.from_dict(t, app=self._app) for t in self["kwargs"]["tasks"]]

    def __len__(self) -> int:  # type: ignore[override]
        return len(self["kwargs"]["tasks"])

    def apply_async(self, args: Iterable | None = None, kwargs: dict | None = None,
                    **options: Any) -> GroupResult:
        app = self.app
        group_id = options.pop("group_id", None) or self.options.get("task_id") or (
            Message.new_id())
        messages = []
        for index, task in enumerate(self.tasks):
            sig = task.clone(args, kwargs, **{**self.options, **options})
            sig["options"].pop("task_id", None) if sig.id == group_id else None
            sig["options"].update(group_id=group_id, group_index=index)
            messages.append(app.build_message(sig.task, sig.args, sig.kwargs, **sig.options))
        if app.conf.task_always_eager:
            return GroupResult(group_id, [self.tasks[i].clone(args, kwargs).apply()
                                          for i in range(len(messages))], app=app)
        app.publish(messages)
        return GroupResult(group_id, [AsyncResult(m.id, app=app, task_name=m.task)
                                      for m in messages], app=app)

    def __call__(self, *args: Any, **kwargs: Any) -> GroupResult:
        return self.apply_async(args, kwargs)


class chord(Signature):  # noqa: N801 - Celery's name
    """A group whose results, once all are in, go to one more task: ``chord(header)(body)``."""

    def __init__(self, header: Any, body: Signature | None = None, app: Any = None,
                 **options: Any):
        tasks = header.tasks if isinstance(header, group) else list(header)
        super().__init__("runner.chord", (), {}, options, subtask_type="chord",
                         app=app or next((t._app for t in tasks if getattr(t, "_app", None)),
                                         None))
        self["kwargs"] = {"header": [dict(t) for t in tasks],
                          "body": dict(body) if body is not None else None}

    @property
    def tasks(self) -> list[Signature]:
        return [Signature.from_dict(t, app=self._app) for t in self["kwargs"]["header"]]

    @property
    def body(self) -> Signature | None:
        body = self["kwargs"]["body"]
        return Signature.from_dict(body, app=self._app) if body else None

    def freeze(self) -> AsyncResult:
        body = self.body
        if body is None:
            raise RunnerError("a chord needs a body: chord(header)(body)")
        result = body.freeze()
        self["kwargs"]["body"] = dict(body)
        self["options"]["task_id"] = body.id
        return result

    def __call__(self, body: Signature | None = None, **options: Any) -> AsyncResult:
        if body is not None:
            self["kwargs"]["body"] = dict(body)
        return self.apply_async((), {}, **options)

    def apply_async(self, args: Iterable | None = None, kwargs: dict | None = None,
                    **options: Any) -> AsyncResult:
        app, body = self.app, self.body
        if body is None:
            raise RunnerError("a chord needs a body: chord(header)(body)")
        body_result = self.freeze()
        body = self.body
        if options.get("chain"):
            body["options"]["chain"] = options.pop("chain")
        header = group(self.tasks, app=app)
        group_id = Message.new_id()
        if app.conf.task_always_eager:
            values = header.apply_async(args, kwargs).get()
            return body.clone((values,)).apply(task_id=body.id)
        size = len(header)
        if size == 0:
            body.clone(([],)).apply_async()
            return body_result
        meta = {"body": dict(body), "size": size}
        header_result = header.apply_async(args, kwargs, group_id=group_id, chord=meta)
        body_result.parent = header_result
        return body_result


# -- moving workflows forward in the worker -----------------------------------------------------


class CanvasMiddleware(Middleware):
    """Sends what comes after a task: its chain's next step, its links, its chord's body."""

    def wants(self, message: Message) -> bool:
        options = message.options
        return bool(options.get("chain") or options.get("link") or options.get("link_error")
                    or options.get("chord"))

    def after_task_stored(self, app: Any, message: Message, state: str,
                          record: ResultRecord | None) -> None:
        options = message.options
        if not (options.get("chain") or options.get("link") or options.get("link_error")
                or options.get("chord")):
            return
        if state == states.SUCCESS:
            value = _value(app, record)
            follow: list[Signature] = [Signature.from_dict(s, app=app).clone((value,))
                                       for s in options.get("link") or ()]
            rest = options.get("chain") or []
            if rest:
                nxt = Signature.from_dict(rest[0], app=app)
                if isinstance(nxt, chord):
                    nxt.apply_async((value,), chain=rest[1:])
                else:
                    follow.append(nxt.clone((value,), chain=rest[1:]) if rest[1:]
                                  else nxt.clone((value,)))
            for sig in follow:  # with rpc://, results go to the caller of the first step
                try:
                    sig.apply_async(parent_id=message.id, root_id=message.root_id,
                                    reply_to=message.reply_to)
                except RunnerError as exc:  # e.g. MessageTooLarge: it fails, not hangs
                    logger.error("Task %s[%s]: sending the next step %s failed: %s",
                                 message.task, message.id, sig.task, exc)
                    _fail_steps(app, [sig, *(Signature.from_dict(s, app=app) for s in
                                             sig.options.get("chain") or ())],
                                exc, message.reply_to)
        elif state in (states.FAILURE, states.REVOKED):
            _fail_rest_of_chain(app, message, record)
            for errback in options.get("link_error") or ():
                Signature.from_dict(errback, app=app).clone((message.id,)).apply_async(
                    parent_id=message.id, root_id=message.root_id)
        if options.get("chord") and state in states.READY_STATES:
            _chord_part_done(app, message, options["chord"])


def _fail_rest_of_chain(app: Any, message: Message, record: ResultRecord | None) -> None:
    """As Celery 5 does: the chain's later steps never run but get the failure stored, so
    ``get()`` of the chain (its last step's result) raises the failing task's error."""
    rest = [Signature.from_dict(s, app=app) for s in message.options.get("chain") or ()]
    if record is None or not rest:
        return
    app.backend.store([ResultRecord(step.id, record.state, record.content_type,
                                    record.payload, record.traceback, time.time(),
                                    {"name": step.task}, reply_to=message.reply_to)
                       for step in rest if step.id])


def _fail_steps(app: Any, steps: list[Signature], exc: BaseException,
                reply_to: str | None) -> None:
    """Store FAILURE for workflow steps that could not be sent, so get() raises."""
    payload = serialization.dumps(serialization.exception_to_dict(exc), "json")[1]
    app.backend.store([ResultRecord(step.id, states.FAILURE, "application/json", payload,
                                    None, time.time(), {"name": step.task}, reply_to=reply_to)
                       for step in steps if step.id])


def apply_links_eagerly(app: Any, options: dict, state: str, value: Any, task_id: str) -> None:
    """Eager mode (``task_always_eager``, ``apply()``): ``link`` callbacks get the result,
    ``link_error`` errbacks the failed task's id, as they would from a worker."""
    links = options.get("link" if state == states.SUCCESS else "link_error")
    first = value if state == states.SUCCESS else task_id
    for link in [links] if isinstance(links, dict) else links or ():
        Signature.from_dict(link, app=app).clone((first,)).apply_async()


def _value(app: Any, record: ResultRecord | None) -> Any:
    if record is None:
        return None
    return serialization.loads(record.payload, record.content_type, app.result_accept)


def _chord_part_done(app: Any, message: Message, meta: dict) -> None:
    """Count one finished header task; once all are counted, the body is sent, then marked
    sent. Counting again (a redelivered header message) is harmless, and a worker that died
    between counting the last part and sending the body leaves it to the redelivery: the body
    is sent at least once, never lost."""
    group_id, size = message.group_id, int(meta["size"])
    index = int(message.options.get("group_index", 0))
    key = f"chord:{group_id}"
    due: list[bool] = []

    def add(raw: bytes | None) -> bytes:
        parts = json.loads(raw) if raw else {"done": {}}
        parts["done"].setdefault(str(index), message.id)
        due[:] = [len(parts["done"]) == size and not parts.get("sent")]
        return json.dumps(parts).encode()

    def mark_sent(raw: bytes | None) -> bytes:
        parts = json.loads(raw) if raw else {"done": {}}
        parts["sent"] = True
        return json.dumps(parts).encode()

    raw = app.backend.update_data(key, add)
    if not due or not due[0]:
        return
    _send_chord_body(app, message, meta, [json.loads(raw)["done"][str(i)] for i in range(size)])
    app.backend.update_data(key, mark_sent)


def _send_chord_body(app: Any, message: Message, meta: dict, ids: list[str]) -> None:
    """The body with every header result, or its FAILURE (ChordError) if one failed."""
    body = Signature.from_dict(meta["body"], app=app)
    records = app.backend.get_many(ids)
    failed = [(i, r) for i, r in ((i, records.get(i)) for i in ids)
              if r is None or r.state != states.SUCCESS]
    if failed:
        task_id, record = failed[0]
        reason = f"Dependency {task_id} raised {_describe(app, record)}"
        error = serialization.exception_to_dict(ChordError(reason))
        content_type, payload = serialization.dumps(error, app.conf.result_serializer)
        app.backend.store([ResultRecord(body.id or "", states.FAILURE, content_type, payload,
                                        None, time.time(), {"name": body.task})])
        return
    values = [_value(app, records[i]) for i in ids]
    body.clone((values,)).apply_async(parent_id=message.id, root_id=message.root_id)


def _describe(app: Any, record: ResultRecord | None) -> str:
    if record is None:
        return "no result"
    try:
        info = serialization.loads(record.payload, record.content_type)
        return f"{info['exc_type']}({', '.join(map(repr, info.get('exc_message', [])))})"
    except Exception:  # noqa: BLE001
        return record.state
