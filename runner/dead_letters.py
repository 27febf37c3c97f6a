"""Dead letters: messages a worker could not run, kept with the reason instead of retried.

A message becomes a dead letter when it cannot be read (garbage bytes, an envelope with a wrong
field, a protocol version this worker does not speak), cannot run (unknown task, content type
not accepted, a payload that is not ``[args, kwargs]``), or was delivered more than
``task_delivery_limit`` times without finishing (a task that kills its process every time).
It is never retried in a loop and never stops a worker. Each broker keeps its dead letters next
to its queues (:meth:`runner.brokers.base.Broker.bury`); ``runner dead-letters`` lists, shows,
requeues and purges them. Where the task id could be read, the worker also stores a FAILURE
result with the reason, so ``get()`` raises instead of waiting for ever.

A dead letter is keyed by its task id (or a hash of its body where none could be read), so the
same message buried twice (a worker killed between burying and acking it) is kept once.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, fields

from runner.exceptions import SerializationError

DEAD_LETTER_VERSION = 1
BODY_LIMIT = 1024 * 1024  # bytes of a dead message kept (a larger one is cut: not requeueable)


@dataclass(slots=True)
class DeadLetter:
    """One buried message: why, from where, when, after how many deliveries, and its bytes."""

    key: str
    reason: str
    queue: str
    body: bytes = b""
    died_at: float = field(default_factory=time.time)
    deliveries: int = 1
    task_id: str | None = None
    task: str | None = None
    hostname: str | None = None
    size: int = 0  # the body's size before it was cut to BODY_LIMIT
    v: int = DEAD_LETTER_VERSION

    @classmethod
    def of(cls, body: bytes, reason: str, queue: str, *, deliveries: int = 1,
           task_id: str | None = None, task: str | None = None,
           hostname: str | None = None, limit: int = BODY_LIMIT) -> DeadLetter:
        if not isinstance(body, bytes):  # (a row written by hand into a store: any type)
            body = str(body).encode("utf-8", "replace")
        key = task_id or "raw-" + hashlib.sha1(body).hexdigest()[:20]
        return cls(key, reason, queue, body[:limit], time.time(), deliveries, task_id, task,
                   hostname, len(body))

    @property
    def truncated(self) -> bool:
        return self.size > len(self.body)

    def encode(self) -> bytes:
        head = {name: getattr(self, name) for name in _HEAD_FIELDS}
        return json.dumps(head, separators=(",", ":")).encode() + b"\n" + self.body

    @classmethod
    def decode(cls, raw: bytes) -> DeadLetter:
        head, _, body = raw.partition(b"\n")
        try:
            fields_ = json.loads(head)
            return cls(body=body, **{k: v for k, v in fields_.items() if k in _HEAD_FIELDS})
        except (ValueError, TypeError) as exc:
            raise SerializationError(f"unreadable dead letter record: {exc}") from None

    def summary(self) -> dict:
        """What ``runner dead-letters list --json`` prints of it (the body as text, cut)."""
        out = {k: v for k, v in asdict(self).items() if k != "body"}
        out["truncated"] = self.truncated
        out["body"] = self.shown_body()
        return out

    def shown_body(self) -> str:
        """The body as text, cut; a task message's payload replaced by its ``argsrepr`` /
        ``kwargsrepr`` where it has them (a ``hide_args`` task's arguments stay hidden)."""
        body = self.body.partition(b"\n")[2] if self.body[:1] == b"\x00" else self.body
        head, sep, _payload = body.partition(b"\n")  # (a signed message: after its block)
        try:
            options = json.loads(head).get("options") if sep else None
        except (ValueError, AttributeError):
            options = None
        if isinstance(options, dict) and ("argsrepr" in options or "kwargsrepr" in options):
            return (head[:2000].decode("utf-8", "replace") + f"\n(arguments not shown: "
                    f"args={options.get('argsrepr')} kwargs={options.get('kwargsrepr')})")
        return self.body[:2000].decode("utf-8", "replace")


_HEAD_FIELDS = tuple(f.name for f in fields(DeadLetter) if f.name != "body")
