"""What travels on the control channel: a command to workers, and each worker's reply.

A command is published on the ``pidbox`` exchange (see :mod:`runner.brokers.fanout`) as one
JSON object, Celery's fields::

    {"v": 1, "method": "ping", "arguments": {}, "destination": ["w1@host"] | null,
     "reply_to": "<reply box address>" | null, "ticket": "<uuid>"}

A worker answers (only where ``reply_to`` is set, and only if ``destination`` is empty or
names it) with ``{"v": 1, "ticket": ..., "node": "w1@host", "reply": <reply>}`` sent to the
reply box. Replies are shaped as Celery's (``{"ok": "pong"}``, a list of requests, ...), or
``{"error": "..."}`` when the command failed. Values JSON cannot hold are sent as their repr.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

VERSION = 1
PIDBOX = "pidbox"  # the exchange commands are broadcast on


class MalformedCommand(ValueError):
    """A control message that is not a command this version understands."""


@dataclass
class Command:
    method: str
    arguments: dict[str, Any] = field(default_factory=dict)
    destination: list[str] | None = None
    reply_to: str | None = None
    ticket: str = ""

    def encode(self) -> bytes:
        return dumps({"v": VERSION, "method": self.method, "arguments": self.arguments,
                      "destination": self.destination, "reply_to": self.reply_to,
                      "ticket": self.ticket})

    @classmethod
    def decode(cls, body: bytes) -> Command:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MalformedCommand(f"not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise MalformedCommand(f"not an object: {type(data).__name__}")
        method, arguments = data.get("method"), data.get("arguments") or {}
        destination, reply_to = data.get("destination"), data.get("reply_to")
        if not isinstance(method, str) or not method:
            raise MalformedCommand("no 'method' (a command name)")
        if not isinstance(arguments, dict):
            raise MalformedCommand(f"'arguments' of {method!r} is not an object")
        if destination is not None and not (
                isinstance(destination, list) and all(isinstance(d, str) for d in destination)):
            raise MalformedCommand(f"'destination' of {method!r} is not a list of node names")
        if reply_to is not None and not isinstance(reply_to, str):
            raise MalformedCommand(f"'reply_to' of {method!r} is not a string")
        return cls(method, arguments, destination, reply_to, str(data.get("ticket") or ""))

    def for_node(self, node: str) -> bool:
        return not self.destination or node in self.destination


@dataclass
class Reply:
    ticket: str
    node: str
    reply: Any

    def encode(self) -> bytes:
        return dumps({"v": VERSION, "ticket": self.ticket, "node": self.node,
                      "reply": self.reply})

    @classmethod
    def decode(cls, body: bytes) -> Reply | None:
        """The reply in ``body``; None for anything else (logged by the caller)."""
        try:
            data = json.loads(body)
            return cls(str(data["ticket"]), str(data["node"]), data["reply"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return None


def dumps(value: Any) -> bytes:
    return json.dumps(value, default=repr, separators=(",", ":")).encode()
