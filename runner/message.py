"""The wire format: one task message, the same on every broker.

A message is an envelope (JSON, always readable, so a worker can refuse content it does not
accept and still record why) followed by the payload ``[args, kwargs]`` in the task's own
serializer. On the wire it is ``envelope_json + b"\\n" + payload``: JSON never contains a raw
newline, so the split is unambiguous and needs no length prefix.

The envelope is versioned (``v``); a worker refuses versions it does not know.
"""

from __future__ import annotations

import json
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

    @staticmethod
    def new_id() -> str:
        return str(uuid.uuid4())

    def encode(self) -> bytes:
        envelope = {name: getattr(self, name) for name in _ENVELOPE_FIELDS}
        if not self.sent_at:
            envelope["sent_at"] = time.time()
        if self.reply_to is None:  # optional: absent unless the result backend is rpc://
            del envelope["reply_to"]
        head = json.dumps(envelope, separators=(",", ":"), ensure_ascii=True).encode()
        return head + b"\n" + self.payload

    @classmethod
    def decode(cls, raw: bytes) -> Message:
        head, sep, payload = raw.partition(b"\n")
        if not sep:
            raise SerializationError("malformed task message: no envelope separator")
        try:
            envelope = json.loads(head)
        except ValueError as exc:
            raise SerializationError(f"malformed task message envelope: {exc}") from exc
        version = envelope.get("v")
        if version != PROTOCOL_VERSION:
            raise SerializationError(
                f"task message protocol v{version} is not understood by this worker "
                f"(speaks v{PROTOCOL_VERSION}); upgrade runner on the worker")
        try:
            return cls(payload=payload, **envelope)
        except TypeError as exc:
            raise SerializationError(f"malformed task message envelope: {exc}") from exc


_ENVELOPE_FIELDS = tuple(f.name for f in fields(Message) if f.name != "payload")
