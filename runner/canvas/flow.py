"""Moving canvases forward in the worker, after each task's result is stored.

:class:`CanvasMiddleware` reads the tail options of a finished task (see
``runner.canvas.signature``) and does what they ask:

- SUCCESS: ``link`` callbacks get the value; the chain's next step is sent with it.
- FAILURE / REVOKED: every later step of the chain will never run: its result ids get the
  failure stored (so ``get()`` raises the task's own error instead of waiting), and a chord
  waiting on that chain counts it as a failed part. ``link_error`` errbacks are called once:
  in the worker with ``(request, exc, traceback)`` for a task taking that, else sent as a task
  with the failed task's id (Celery's old style).
- A chord header part (either outcome) is counted: the chord's finished parts are a set in the
  result backend (``chord_part_done``: add and count in one atomic step, O(1) per part, no
  retries), the same kind of fan-in mapped pipeline steps use. The part that completes the set
  sends the body with every value in header order, or, if a part failed, stores the body's
  FAILURE (``ChordError``) and calls its errbacks. The body is marked sent afterwards: a
  redelivered part (its worker died before the ack) counts nothing twice and sends the body
  only if it was not marked sent; a body sent twice has one task id, and a redelivery of a
  finished task is not run again. Then the parts are deleted (the mark stays): a part
  delivered again later counts as the first of an empty set, which never completes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from runner import serialization, states
from runner.backends.base import ResultRecord
from runner.canvas.signature import ChordError, Signature, maybe_signature, takes_request
from runner.exceptions import RunnerError
from runner.middleware import Middleware

logger = logging.getLogger("runner.worker")

_HOOKED = ("chain", "link", "link_error", "chord")


@dataclass(slots=True)
class Done:
    """A finished task (or a chord's join) whose tail options are to be acted on."""

    id: str
    task: str
    options: dict
    state: str
    record: ResultRecord | None
    group_id: str | None = None
    root_id: str | None = None
    reply_to: str | None = None
    message: Any = None
    extra: dict = field(default_factory=dict)


class CanvasMiddleware(Middleware):
    """Sends what comes after a task: its chain's next step, its links and errbacks, its
    chord's body."""

    def wants(self, message: Any) -> bool:
        options = message.options
        return bool(options) and any(options.get(k) for k in _HOOKED)

    def after_task_stored(self, app: Any, message: Any, state: str,
                          record: ResultRecord | None) -> None:
        self.after_tasks_stored(app, [(message, state, record)])

    def after_tasks_stored(self, app: Any, completed: list) -> None:
        """Each outcome's tail; the chord parts of the batch are counted in one round trip."""
        parts: list[tuple[str, int, str, dict]] = []
        for message, state, record in completed:
            if state not in (states.SUCCESS, states.FAILURE, states.REVOKED):
                continue
            if not self.wants(message):
                continue
            advance(app, Done(message.id, message.task, message.options, state, record,
                              message.group_id, message.root_id, message.reply_to, message),
                    count=False)
            options = message.options
            if options.get("chord"):
                parts.append((message.group_id or options.get("group_id"),
                              int(options.get("group_index") or 0), message.id,
                              options["chord"]))
        if parts:
            count_parts(app, parts)


def advance(app: Any, done: Done, count: bool = True) -> None:
    """Act on the tail of ``done`` (see the module docstring); ``count=False`` leaves a chord
    part to be counted by the caller."""
    options = done.options
    if done.state == states.SUCCESS:
        _send_next(app, done, _value(app, done.record))
    else:
        rest = [maybe_signature(s, app=app) for s in options.get("chain") or ()]
        if rest:
            never_run(app, rest, done.record, done.reply_to)
        if options.get("link_error"):
            exc = _value(app, done.record) if done.record is not None else None
            call_errbacks(app, options["link_error"], _request_of(app, done), exc,
                          done.record.traceback if done.record else None)
    if count and options.get("chord"):
        count_part(app, done.group_id or options.get("group_id"),
                   int(options.get("group_index") or 0), done.id, options["chord"])


def _send_next(app: Any, done: Done, value: Any) -> None:
    options = done.options
    follow: list[tuple[Signature, dict]] = [
        (maybe_signature(s, app=app), {}) for s in options.get("link") or ()]
    rest = options.get("chain") or []
    if rest:
        follow.append((maybe_signature(rest[0], app=app), {"chain": rest[1:] or None}))
    for sig, tail in follow:
        try:  # with rpc://, results go to the caller of the first step
            sig.apply_async((value,), parent_id=done.id, root_id=done.root_id,
                            reply_to=done.reply_to, **tail)
        except RunnerError as exc:  # e.g. MessageTooLarge: it fails, not hangs
            logger.error("Task %s[%s]: sending the next step %s failed: %s",
                         done.task, done.id, sig.task, exc)
            never_run(app, [sig._attach(tail) if tail.get("chain") else sig],
                      failure_record(app, exc), done.reply_to)


def never_run(app: Any, sigs: list[Signature], record: ResultRecord | None,
              reply_to: str | None) -> None:
    """``sigs`` will never run (a step before them failed): store ``record``'s failure for
    every result id in them, and carry it on to what waits for them (a later chain step, a
    chord they are a part of), as Celery 5 does."""
    if record is None:
        return
    now = time.time()
    app.backend.store([ResultRecord(task_id, record.state, record.content_type,
                                    record.payload, record.traceback, now,
                                    {"name": sig.task}, reply_to=reply_to)
                       for sig in sigs for task_id in sig._result_ids() if task_id])
    for sig in sigs:
        for final_id, final in _finals(sig):
            rest = [maybe_signature(s, app=app) for s in final.get("chain") or ()]
            if rest:
                never_run(app, rest, record, reply_to)
            if final.get("chord"):
                count_part(app, final.get("group_id"), int(final.get("group_index") or 0),
                           final_id, final["chord"])


def _finals(sig: Signature) -> list[tuple[str, dict]]:
    """(result id, options) of the final task(s) of ``sig``."""
    from runner.canvas.chord import chord
    from runner.canvas.primitives import chain, group

    if isinstance(sig, chain):
        return _finals(sig.tasks[-1])
    if isinstance(sig, group):
        return [f for t in sig.tasks for f in _finals(t)]
    if isinstance(sig, chord):
        if sig.body is not None:
            return _finals(sig.body)
        return [(sig.id or "", sig["kwargs"].get("tail") or {})]
    return [(sig.id or "", sig["options"])]


def _errbacks_of(sig: Signature | None) -> list:
    """The errbacks a canvas's first task(s) carry (a chord body's, to call on ChordError)."""
    from runner.canvas.chord import chord
    from runner.canvas.primitives import chain, group

    if sig is None:
        return []
    if isinstance(sig, chain):
        return _errbacks_of(sig.tasks[0])
    if isinstance(sig, group):
        found: list = []
        for task in sig.tasks:
            found += [e for e in _errbacks_of(task) if e not in found]
        return found
    if isinstance(sig, chord):
        return (_errbacks_of(sig.body) if sig.body is not None
                else (sig["kwargs"].get("tail") or {}).get("link_error") or [])
    return list(sig["options"].get("link_error") or ())


def call_errbacks(app: Any, errbacks: list, request: Any, exc: BaseException | None,
                  traceback: str | None) -> None:
    """Each errback once: a task taking ``(request, exc, traceback)`` is called here, in this
    process, as Celery's worker does; the others are sent with the failed task's id."""
    old_style: list[Signature] = []
    for errback in errbacks:
        sig = maybe_signature(errback, app=app)
        if takes_request(sig):
            try:
                sig(request, exc, traceback)
            except Exception:  # noqa: BLE001 - user code: logged, not fatal
                logger.exception("Errback %s of task %s raised", sig.task, request.id)
        else:
            old_style.append(sig)
    for sig in old_style:
        try:
            sig.apply_async((request.id,), parent_id=request.id, root_id=request.root_id)
        except RunnerError as exc:
            logger.error("sending errback %s of task %s failed: %s", sig.task, request.id, exc)


def _request_of(app: Any, done: Done) -> Any:
    """The failed task's request, as errbacks get it (args decoded from its message)."""
    from runner.message import call_arguments
    from runner.task import Request

    args: list = []
    kwargs: dict = {}
    message = done.message
    if message is not None:
        try:
            payload = serialization.decompress(message.payload,
                                               message.options.get("compression"))
            args, kwargs = call_arguments(serialization.loads(
                payload, message.content_type, serialization.accept_set(app.conf.accept_content)))
        except Exception:  # noqa: BLE001 - an undecodable call: the errback gets no args
            pass
    return Request(id=done.id, task=done.task, args=args, kwargs=kwargs, root_id=done.root_id,
                   parent_id=getattr(message, "parent_id", None), group=done.group_id,
                   called_directly=False, options=done.options, reply_to=done.reply_to,
                   headers=getattr(message, "headers", {}) or {})


# -- chords -------------------------------------------------------------------------------------


def count_part(app: Any, group_id: str | None, index: int, part_id: str, meta: dict) -> None:
    """Count one finished header part; the one that completes the chord finishes it."""
    count_parts(app, [(group_id, index, part_id, meta)])


def count_parts(app: Any, parts: list[tuple[str | None, int, str, dict]]) -> None:
    """Count finished header parts (group id, index, part id, chord meta) in one round trip;
    a part that completes its chord finishes it."""
    for group_id, _, part_id, _ in parts:
        if not group_id:
            logger.error("chord part %s has no group id: not counted", part_id)
    parts = [p for p in parts if p[0]]
    if not parts:
        return
    backend = app.backend
    counted = backend.chord_parts_done([(g, f"{index}:{part_id}") for g, index, part_id, _
                                        in parts])
    for (group_id, _, _, meta), (new, count, stored_size) in zip(parts, counted, strict=True):
        size = meta.get("size")
        if size is None:
            size = stored_size
        if size is None or count < size:
            continue
        if not new and backend.chord_body_sent(group_id):
            continue  # a redelivered part, the body already on its way
        finish_chord(app, group_id, meta)


def chord_size_known(app: Any, group_id: str, size: int, meta: dict) -> None:
    """A generator header was sent whole: store its size; finish the chord if every part
    finished already (the size and the last part are stored atomically each, so exactly one
    of them sees both)."""
    if app.backend.set_chord_size(group_id, size) >= size:
        finish_chord(app, group_id, meta)


def finish_chord(app: Any, group_id: str, meta: dict) -> None:
    """Every part finished: send the body with the values in header order (or finish the join
    of a body-less chord); if a part failed, the body fails with ChordError instead."""
    backend = app.backend
    parts: dict[int, str] = {}
    for member in backend.chord_members(group_id):
        index, _, part_id = member.partition(":")
        parts.setdefault(int(index), part_id)
    ids = [parts[i] for i in sorted(parts)]
    records = backend.get_many(ids)
    failed = next(((i, records.get(i)) for i in ids
                   if records.get(i) is None or records[i].state != states.SUCCESS), None)
    body = maybe_signature(meta.get("body"), app=app)
    if failed is not None:
        error = ChordError(f"Dependency {failed[0]} raised {_describe(app, failed[1])}")
        record = failure_record(app, error)
        if body is not None:
            never_run(app, [body], record, None)
            call_errbacks(app, _errbacks_of(body), _body_request(body), error, None)
        else:
            tail = meta.get("tail") or {}
            advance(app, Done(meta["id"], "celery.chord", tail, states.FAILURE,
                              _stored(app, meta["id"], record), tail.get("group_id")))
    else:
        values = [_value(app, records[i]) for i in ids]
        if body is not None:
            body.apply_async((values,))
        else:
            finish_join(app, meta, values, None)
    backend.mark_chord_body_sent(group_id)
    backend.forget_chord(group_id)  # (the mark stays: a part delivered again sends nothing)


def finish_join(app: Any, meta: dict, values: list, reply_to: str | None) -> None:
    """A chord without body (a group that reports as one value): its result is the list of
    values, then its tail is acted on as a task's."""
    content_type, payload = serialization.dumps(values, app.conf.result_serializer)
    record = ResultRecord(meta["id"], states.SUCCESS, content_type, payload, None,
                          time.time(), {"name": "celery.chord"}, reply_to=reply_to)
    app.backend.store([record])
    tail = meta.get("tail") or {}
    advance(app, Done(meta["id"], "celery.chord", tail, states.SUCCESS, record,
                      tail.get("group_id")))


def _stored(app: Any, task_id: str, record: ResultRecord) -> ResultRecord:
    record = ResultRecord(task_id, record.state, record.content_type, record.payload,
                          record.traceback, time.time(), {"name": "celery.chord"})
    app.backend.store([record])
    return record


def _body_request(body: Signature) -> Any:
    from runner.task import Request

    first = body
    while getattr(first, "tasks", None) and first.subtask_type == "chain":
        first = first.tasks[0]
    return Request(id=body.id, task=body.task, args=list(first["args"]),
                   kwargs=dict(first["kwargs"]), called_directly=False,
                   options=dict(first["options"]))


def failure_record(app: Any, exc: BaseException) -> ResultRecord:
    content_type, payload = serialization.dumps(serialization.exception_to_dict(exc),
                                                app.conf.result_serializer)
    return ResultRecord("", states.FAILURE, content_type, payload, None, time.time())


def _value(app: Any, record: ResultRecord | None) -> Any:
    return record.value(app.result_accept) if record is not None else None


def _describe(app: Any, record: ResultRecord | None) -> str:
    return record.describe_error(app.result_accept) if record is not None else "no result"


def apply_links_eagerly(app: Any, options: dict, state: str, value: Any, task_id: str) -> None:
    """Eager mode (``task_always_eager``, ``apply()``): ``link`` callbacks get the result,
    ``link_error`` errbacks the failed task's request and exception (or its id, old style),
    as they would from a worker."""
    if state == states.SUCCESS:
        for link in _as_list(options.get("link")):
            maybe_signature(link, app=app).clone((value,)).apply_async()
        return
    errbacks = _as_list(options.get("link_error"))
    if errbacks:
        from runner.task import Request

        request = Request(id=task_id, called_directly=False, is_eager=True, options=options)
        call_errbacks(app, errbacks, request, value if isinstance(value, BaseException)
                      else None, None)


def _as_list(value: Any) -> list:
    return [value] if isinstance(value, dict) else list(value or ())
