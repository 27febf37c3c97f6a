"""The wire format: one task message, the same on every broker.

A message is an envelope (JSON, always readable, so a worker can refuse content it does not
accept and still record why) followed by the payload ``[args, kwargs]`` in the task's own
serializer. On the wire it is ``envelope_json + b"\\n" + payload``: JSON never contains a raw
newline, so the split is unambiguous and needs no length prefix.

The envelope is versioned (``v``); a worker refuses versions it does not know. It is checked
once, here, where a message is decoded (:func:`check_envelope`): every field's type and range,
so nothing downstream (pools, tracing, the revoked lookup, beat, pipelines) ever sees a wrong
type. Fields this version does not know (a newer producer's) are kept in ``extra``, written
again when the message is sent on (a retry, a requeue of a dead letter), and otherwise ignored.
"""

from __future__ import annotations

import json
import math
import reprlib
import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any

from runner.exceptions import SerializationError

PROTOCOL_VERSION = 1


@dataclass(slots=True)
class Message:
    """One task to run; what producers enqueue and workers fetch."""

    id: str
    task: str
    content_type: str
    payload: bytes  # serialized [args, kwargs]
    queue: str = "celery"
    priority: int | None = None  # 0 (lowest) .. 9 (highest), as Celery with Redis/AMQP
    eta: float | None = None  # epoch seconds (UTC); None = now
    expires: float | None = None  # epoch seconds; a message fetched after it is REVOKED
    retries: int = 0
    root_id: str | None = None
    parent_id: str | None = None
    group_id: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    # per-call options the worker honours: acks_late, time_limit, soft_time_limit,
    # ignore_result, result_serializer, link, link_error, compression
    options: dict[str, Any] = field(default_factory=dict)
    sent_at: float = 0.0
    reply_to: str | None = None  # the caller's reply queue, where rpc:// sends the result
    v: int = PROTOCOL_VERSION
    extra: dict[str, Any] | None = None  # a newer producer's fields, kept
    signed: Signed | None = None  # how it came signed (checked by the worker, never re-sent)

    @staticmethod
    def new_id() -> str:
        return str(uuid.uuid4())

    def encode(self) -> bytes:
        envelope = {name: getattr(self, name) for name in _ENVELOPE_FIELDS}
        if not self.sent_at:
            envelope["sent_at"] = time.time()
        if self.reply_to is None:  # optional: absent unless the result backend is rpc://
            del envelope["reply_to"]
        if self.extra:
            envelope = {**self.extra, **envelope}
        head = json.dumps(envelope, separators=(",", ":"), ensure_ascii=True).encode()
        return head + b"\n" + self.payload

    @classmethod
    def decode(cls, raw: bytes) -> Message:
        if raw[:1] == b"\x00":  # signed: b"\0" + signature JSON + b"\n" + the message
            signed = Signed.split(raw)
            message = cls.decode(signed.data)
            message.signed = signed
            return message
        head, sep, payload = raw.partition(b"\n")
        if not sep:
            raise BadMessage("malformed task message: no envelope separator")
        try:
            envelope = json.loads(head)
        except (ValueError, RecursionError) as exc:  # (UnicodeDecodeError is a ValueError)
            raise BadMessage(f"malformed task message envelope: {exc}") from None
        return cls(payload=payload, **check_envelope(envelope))


@dataclass(slots=True, frozen=True)
class Signed:
    """A signed message's signature block, and the exact bytes it covers (runner.security
    checks it; a message is signed on the wire, envelope and payload, so nothing in it can be
    changed without breaking the signature). The block holds ``signer`` and ``signature`` (a
    public-key signature of this message) or ``session`` and ``mac`` (a signed session token
    and an HMAC of this message under its key)."""

    block: dict[str, str]
    data: bytes

    @classmethod
    def split(cls, raw: bytes) -> Signed:
        head, sep, data = raw[1:].partition(b"\n")
        try:
            block = json.loads(head) if sep else None
        except (ValueError, RecursionError):
            block = None
        if not isinstance(block, dict) or not (
                _strings(block, "signer", "signature") or _strings(block, "session", "mac")):
            raise BadMessage("malformed signed task message: no signature block")
        return cls(block, data)


def _strings(block: dict, *names: str) -> bool:
    return all(isinstance(block.get(name), str) for name in names)


HIDDEN_ARGUMENTS = "***"  # what is shown of a hide_args task's arguments


def shown_arguments(options: dict, args: Any, kwargs: Any) -> tuple[str, str]:
    """What logs, events, inspect replies and dead-letter listings show of a task's arguments:
    Celery's ``argsrepr`` / ``kwargsrepr`` where the caller gave them (``hide_args`` tasks:
    ``***``), else a short repr."""
    argsrepr, kwargsrepr = options.get("argsrepr"), options.get("kwargsrepr")
    return (argsrepr if argsrepr is not None else reprlib.repr(tuple(args or ())),
            kwargsrepr if kwargsrepr is not None else reprlib.repr(dict(kwargs or {})))


def call_arguments(value: Any) -> tuple[list, dict]:
    """``(args, kwargs)`` from a decoded payload, which must be ``[args, kwargs]``: a list and
    an object with string keys. Raises :class:`BadMessage` otherwise."""
    if (isinstance(value, (list, tuple)) and len(value) == 2  # noqa: UP038 - faster
            and isinstance(value[0], (list, tuple)) and type(value[1]) is dict  # noqa: UP038
            and (not value[1] or all(type(key) is str for key in value[1]))):
        args = value[0]
        return (args if type(args) is list else list(args)), value[1]
    raise BadMessage(f"invalid task message: the payload must be [args, kwargs] (a list and "
                     f"an object with string keys), not {_show(value)}")


class BadMessage(SerializationError):
    """A message that cannot be run as it is: the reason names the field; ``task_id`` is its
    id where that could be read (so a FAILURE can be stored for whoever waits on it)."""

    def __init__(self, reason: str, task_id: str | None = None, task: str | None = None,
                 reply_to: str | None = None):
        super().__init__(reason)
        self.task_id, self.task, self.reply_to = task_id, task, reply_to


# Headers runner's pipeline engine writes and reads back (its step's run, name, item, attempt,
# and how many items a mapped step has): checked with the rest, so a forged one is refused
# here rather than breaking the engine after the task ran.
HEADER_RUN = "pipeline_run"
HEADER_STEP = "pipeline_step"
HEADER_INDEX = "pipeline_index"
HEADER_ATTEMPT = "pipeline_attempt"
HEADER_ITEMS = "pipeline_items"


def _headers_valid(headers: dict) -> bool:
    if not headers or HEADER_RUN not in headers:
        return HEADER_STEP not in headers if headers else True
    for key in (HEADER_RUN, HEADER_STEP):
        value = headers.get(key)
        if type(value) is not str or not 0 < len(value) <= MAX_ID_LENGTH:
            return False
    for key, low in ((HEADER_INDEX, 0), (HEADER_ATTEMPT, 1), (HEADER_ITEMS, 0)):
        value = headers.get(key)
        if value is not None and (type(value) is not int or not low <= value <= 10**9):
            return False
    return True


_ENVELOPE_FIELDS = tuple(f.name for f in fields(Message)
                         if f.name not in ("payload", "extra", "signed"))
_KNOWN = frozenset(_ENVELOPE_FIELDS)
MAX_ID_LENGTH = 255  # task ids, queue and task names: what every broker and backend can key on
MAX_TIME = 253_402_300_799  # epoch seconds of 9999-12-31: the largest eta/expires/number
MAX_TIME_LIMIT = 10**8  # seconds (about 3 years): larger limits overflow the clocks they arm


def _text(value: Any, name: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise ValueError(f"{name} must be a non-empty string of at most {MAX_ID_LENGTH} "
                         f"characters, not {_show(value)}")
    return value


def _number(value: Any, name: str, optional: bool = True, positive: bool = False
            ) -> float | None:
    if value is None and optional:
        return None
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or (positive and value <= 0) or value < 0
            or value > MAX_TIME):
        rule = (f"a positive number up to {MAX_TIME}" if positive
                else f"a number from 0 to {MAX_TIME}")
        raise ValueError(f"{name} must be {rule}{' or null' if optional else ''}, "
                         f"not {_show(value)}")
    return value


def _integer(value: Any, name: str, low: int, high: int, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}"
                         f"{' or null' if optional else ''}, not {_show(value)}")
    return value


def _flag(value: Any, name: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{name} must be true, false or null, not {_show(value)}")
    return value


_SUBTASK_TYPES = (None, "chain", "group", "chord", "chunks", "xmap", "xstarmap")


def _signatures(value: Any, name: str, depth: int = 0) -> list:
    """A list of signatures as runner writes them (``runner.canvas.Signature`` dicts), nested
    canvases included: a wrong one is refused here, not met after the task ran."""
    if not isinstance(value, list) or depth > 20:
        raise ValueError(f"{name} must be a list of task signatures, not {_show(value)}")
    for index, sig in enumerate(value):
        where = f"{name}[{index}]"
        if not (isinstance(sig, dict) and isinstance(sig.get("task"), str) and sig["task"]
                and isinstance(sig.get("args"), list) and isinstance(sig.get("kwargs"), dict)
                and isinstance(sig.get("options"), dict)
                and isinstance(sig.get("immutable"), bool)
                and sig.get("subtask_type") in _SUBTASK_TYPES):
            raise ValueError(f"{where} must be a task signature (task, args, kwargs, options, "
                             f"immutable), not {_show(sig)}")
        kind, inner = sig.get("subtask_type"), sig["kwargs"]
        if kind in ("chain", "group"):
            _signatures(inner.get("tasks"), f"{where}.kwargs.tasks", depth + 1)
        elif kind == "chord":
            _signatures(inner.get("header"), f"{where}.kwargs.header", depth + 1)
            if inner.get("body") is not None:
                _signatures([inner["body"]], f"{where}.kwargs.body", depth + 1)
            if inner.get("tail") is not None:
                _check_options(inner["tail"], f"{where}.kwargs.tail", depth + 1)
        _check_options(sig["options"], f"{where}.options", depth + 1)
    return value


def _mapping(value: Any, name: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be an object, not {_show(value)}")
    return value


def _show(value: Any) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_options(options: dict, name: str = "options", depth: int = 0) -> None:
    """The per-call options a worker acts on; others (a newer producer's) are left alone."""
    for key in ("acks_late", "ignore_result"):
        _flag(options.get(key), f"{name}.{key}")
    for key in ("time_limit", "soft_time_limit"):
        value = _number(options.get(key), f"{name}.{key}", positive=True)
        if value is not None and value > MAX_TIME_LIMIT:
            raise ValueError(f"{name}.{key} must be at most {MAX_TIME_LIMIT} seconds, "
                             f"not {_show(value)}")
    for key in ("result_serializer", "compression"):
        _text(options.get(key), f"{name}.{key}", optional=True)
    for key in ("argsrepr", "kwargsrepr"):
        if options.get(key) is not None and not isinstance(options[key], str):
            raise ValueError(f"{name}.{key} must be a string, not {_show(options[key])}")
    for key in ("link", "link_error", "chain"):
        if options.get(key) is not None:
            _signatures(options[key], f"{name}.{key}", depth)
    chord = options.get("chord")
    if chord is not None:
        _mapping(chord, f"{name}.chord")
        if chord.get("body") is not None:  # (none: a group joined into one value)
            _signatures([chord.get("body")], f"{name}.chord.body", depth)
        _text(chord.get("id"), f"{name}.chord.id", optional=True)
        _mapping(chord.get("tail") or {}, f"{name}.chord.tail")
        _check_options(chord.get("tail") or {}, f"{name}.chord.tail", depth + 1)
        _integer(chord.get("size"), f"{name}.chord.size", 0, 10**9, optional=True)
    if "group_index" in options:
        _integer(options["group_index"], f"{name}.group_index", 0, 10**9)
    step = options.get("step_retries")
    if step is not None:
        _mapping(step, f"{name}.step_retries")
        _integer(step.get("max_retries"), f"{name}.step_retries.max_retries", 0, 10**6)
        _number(step.get("delay"), f"{name}.step_retries.delay")
        backoff = step.get("backoff")
        if not isinstance(backoff, bool):
            _number(backoff, f"{name}.step_retries.backoff")


_OPTIONS_CHECKED = frozenset({"acks_late", "ignore_result", "time_limit", "soft_time_limit",
                               "result_serializer", "compression", "link", "link_error",
                               "chain", "chord", "group_index", "step_retries", "argsrepr",
                               "kwargsrepr"})


def _plainly_valid(envelope: Any) -> bool:
    """The common case, checked inline (it runs for every message a worker takes): a current
    producer's envelope with no options the worker must look into. False sends the envelope
    through the full check, which names what is wrong."""
    if type(envelope) is not dict or not _KNOWN.issuperset(envelope):
        return False
    get = envelope.get
    task_id, task, content_type, queue = (get("id"), get("task"), get("content_type"),
                                          get("queue"))
    if (type(task_id) is not str or type(task) is not str or type(content_type) is not str
            or type(queue) is not str or not 0 < len(task_id) <= MAX_ID_LENGTH
            or not 0 < len(task) <= MAX_ID_LENGTH or not 0 < len(queue) <= MAX_ID_LENGTH
            or not 0 < len(content_type) <= MAX_ID_LENGTH or get("v") != PROTOCOL_VERSION):
        return False
    for key in ("root_id", "parent_id", "group_id", "reply_to"):
        value = get(key)
        if value is not None and (type(value) is not str or not 0 < len(value) <= 255):
            return False
    priority, retries, headers, options = (get("priority"), get("retries"), get("headers"),
                                           get("options"))
    eta, expires, sent_at = get("eta"), get("expires"), get("sent_at")
    return ((priority is None or (type(priority) is int and 0 <= priority <= 255))
            and type(retries) is int and 0 <= retries <= 10**9
            and type(headers) is dict and (not headers or _headers_valid(headers))
            and type(options) is dict
            and (not options or _OPTIONS_CHECKED.isdisjoint(options))
            and (eta is None or _finite(eta)) and (expires is None or _finite(expires))
            and sent_at is not None and _finite(sent_at))


def _finite(value: Any) -> bool:
    return value is None or (type(value) in (int, float) and 0 <= value <= MAX_TIME)


def check_envelope(envelope: Any) -> dict[str, Any]:
    """The keyword arguments of a :class:`Message` (payload aside) from a decoded envelope,
    every field checked; raises :class:`BadMessage` naming the first field that is wrong."""
    if _plainly_valid(envelope):
        return envelope
    if not isinstance(envelope, dict):
        raise BadMessage(f"malformed task message envelope: a JSON object expected, not "
                         f"{_show(envelope)}")
    raw_id, raw_task = envelope.get("id"), envelope.get("task")
    task_id = raw_id if isinstance(raw_id, str) and 0 < len(raw_id) <= MAX_ID_LENGTH else None
    task = raw_task if isinstance(raw_task, str) else None
    reply_to = envelope.get("reply_to") if isinstance(envelope.get("reply_to"), str) else None
    version = envelope.get("v")
    if version != PROTOCOL_VERSION:
        raise BadMessage(f"task message protocol v{_show(version)} is not understood by this "
                         f"worker (speaks v{PROTOCOL_VERSION}); upgrade runner on the worker, "
                         f"then requeue the dead letter", task_id, task, reply_to)
    try:
        checked = {
            "id": _text(raw_id, "id"), "task": _text(raw_task, "task"),
            "content_type": _text(envelope.get("content_type"), "content_type"),
            "queue": _text(envelope.get("queue", "celery"), "queue"),
            "priority": _integer(envelope.get("priority"), "priority", 0, 255, optional=True),
            "eta": _number(envelope.get("eta"), "eta"),
            "expires": _number(envelope.get("expires"), "expires"),
            "retries": _integer(envelope.get("retries", 0), "retries", 0, 10**9),
            "root_id": _text(envelope.get("root_id"), "root_id", optional=True),
            "parent_id": _text(envelope.get("parent_id"), "parent_id", optional=True),
            "group_id": _text(envelope.get("group_id"), "group_id", optional=True),
            "headers": _mapping(envelope.get("headers", {}), "headers"),
            "options": _mapping(envelope.get("options", {}), "options"),
            "sent_at": _number(envelope.get("sent_at", 0.0), "sent_at", optional=False),
            "reply_to": _text(envelope.get("reply_to"), "reply_to", optional=True),
        }
        _check_options(checked["options"])
        if not _headers_valid(checked["headers"]):
            raise ValueError(f"headers: a pipeline step's {HEADER_RUN} and {HEADER_STEP} must "
                             f"be strings, {HEADER_INDEX}, {HEADER_ATTEMPT} and {HEADER_ITEMS} "
                             f"integers, not {_show(checked['headers'])}")
    except ValueError as exc:
        raise BadMessage(f"invalid task message: {exc}", task_id, task, reply_to) from None
    extra = {key: value for key, value in envelope.items() if key not in _KNOWN}
    if extra:
        checked["extra"] = extra
    return checked
