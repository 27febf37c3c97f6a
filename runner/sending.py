"""Sending, below the app: the message ``apply_async`` / ``send_task`` enqueue (routing, the
serializer and compression, eta and expiry, the options that travel to the worker, the size
limit), and dead letters sent back to their queues."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from runner import security, serialization
from runner.brokers.base import DEAD_LETTER_SCAN
from runner.exceptions import MessageTooLarge, SerializationError
from runner.message import HIDDEN_ARGUMENTS, Message

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner
    from runner.backends.base import ResultBackend
    from runner.brokers.base import Broker
    from runner.task import Task


_CANVAS_OPTIONS = frozenset({"chain", "link", "link_error", "chord"})

#: apply_async options that travel to the worker in ``Message.options``
_WORKER_OPTIONS = ("acks_late", "time_limit", "soft_time_limit", "ignore_result",
                   "result_serializer", "link", "link_error", "chain", "chord", "group_index",
                   "step_retries", "argsrepr", "kwargsrepr")


def build_message(app: Runner, name: str, args: Any, kwargs: dict | None, _task: Task | None,
                  options: dict[str, Any]) -> Message:
    """The message of ``name(*args, **kwargs)`` with apply_async's ``options``; ``_task``: the
    task registered in ``app`` (None: looked up), whose own options (queue, priority,
    serializer) apply."""
    conf = app.conf
    if _task is None:
        _task = app.tasks.get(name)
    options = {k: v for k, v in options.items() if v is not None}
    routed = app.router().route(name, options, args or (), kwargs or {}, _task)
    if _task is not None:
        for key in ("queue", "priority"):
            if key not in options and getattr(_task, key) is not None:
                routed[key] = getattr(_task, key)
    serializer = options.get("serializer") or (
        _task.serializer if _task is not None and _task.serializer else conf.task_serializer)
    if serializer == security.AUTH:  # the broker signs the whole message; inside: this
        serializer = app._signing().serializer
    content_type, payload = serialization.dumps([list(args or ()), dict(kwargs or {})],
                                                serializer)
    worker_options = _worker_options(options, _task)
    compression = options.get("compression") or conf.task_compression
    if compression:
        payload = serialization.compress(payload, compression)
        worker_options["compression"] = compression
    if conf.task_message_max_size is not None:
        _check_size(name, payload, worker_options, conf.task_message_max_size)
    now = time.time()
    task_id = options.get("task_id") or Message.new_id()
    return Message(
        id=task_id, task=name, content_type=content_type, payload=payload,
        queue=routed.get("queue") or conf.task_default_queue,
        priority=routed.get("priority", conf.task_default_priority),
        eta=_eta(app, options, now), expires=_expires(app, options.get("expires"), now),
        retries=int(options.get("retries", 0)),
        root_id=options.get("root_id") or task_id, parent_id=options.get("parent_id"),
        group_id=options.get("group_id"), headers=dict(options.get("headers") or {}),
        options=worker_options, sent_at=now,
        reply_to=options.get("reply_to") or app._reply_to())


def _worker_options(options: dict[str, Any], task: Task | None) -> dict[str, Any]:
    """The options that travel to the worker in ``Message.options``."""
    found = {k: options[k] for k in _WORKER_OPTIONS if k in options}
    for key in ("link", "link_error"):  # one signature or a list of them, as plain dicts
        if key in found:
            value = found[key]
            found[key] = [dict(s) for s in ([value] if isinstance(value, dict) else value)]
    if task is not None and task.hide_args:  # (Celery's argsrepr/kwargsrepr win)
        found.setdefault("argsrepr", HIDDEN_ARGUMENTS)
        found.setdefault("kwargsrepr", HIDDEN_ARGUMENTS)
    return found


def _eta(app: Runner, options: dict[str, Any], now: float) -> float | None:
    """Epoch seconds of ``countdown`` / ``eta`` (None: now)."""
    if options.get("countdown") is not None:
        return now + float(options["countdown"])
    if options.get("eta") is not None:
        return app.to_timestamp(options["eta"])
    return None


def _expires(app: Runner, expires: Any, now: float) -> float | None:
    """Epoch seconds of ``expires``: seconds from now, a timedelta or a datetime."""
    if isinstance(expires, timedelta):
        return now + expires.total_seconds()
    if isinstance(expires, datetime):
        return app.to_timestamp(expires)
    return None if expires is None else now + float(expires)


def _check_size(name: str, payload: bytes, worker_options: dict[str, Any], limit: int) -> None:
    """``task_message_max_size``: refuse a message over it, saying what makes it large."""
    size, what = len(payload), "its arguments take"
    if size <= limit and worker_options and not _CANVAS_OPTIONS.isdisjoint(worker_options):
        # what comes next travels in this message: a chain's later steps, links, a chord's
        # body (each later message is built from it, so none is larger)
        size += len(json.dumps(worker_options, default=repr))
        what = "its arguments and the workflow steps it carries take"
    if size > limit:
        raise MessageTooLarge(
            f"task {name!r}: {what} {size:,} bytes serialized, over task_message_max_size "
            f"({limit:,}); nothing was sent. Pass a reference to the data (a file path, a key) "
            f"instead, or raise the setting (None: no limit)")


def requeue(broker: Broker, backend: ResultBackend, keys: Sequence[str] | None = None
            ) -> tuple[list[str], list[str]]:
    """Send dead letters (``keys``; None: all) back to their queues as new messages, then
    delete them: their delivery count starts again, and their stored FAILURE is forgotten
    first (so the new run's result is not). Returns the task ids sent and one line per
    letter that was not: still unreadable by this version (fix the producer, or upgrade
    runner first), cut when it was buried, or not there."""
    letters = {d.key: d for d in broker.dead_letters(limit=DEAD_LETTER_SCAN)}
    problems = [f"{key}: no such dead letter" for key in keys or () if key not in letters]
    sent: list[tuple[str, Message]] = []
    for key, letter in letters.items():
        if keys is not None and key not in keys:
            continue
        if letter.truncated:
            problems.append(f"{key}: its body was cut to {len(letter.body)} of "
                            f"{letter.size} bytes when it was buried: it cannot be sent")
            continue
        try:
            sent.append((key, Message.decode(letter.body)))
        except SerializationError as exc:
            problems.append(f"{key}: still unreadable: {exc}")
    if sent:
        for _, message in sent:
            backend.forget(message.id)
        broker.enqueue([message for _, message in sent])
        broker.flush()  # in the broker before the dead letters go
        broker.remove_dead([key for key, _ in sent])
    return [message.id for _, message in sent], problems
