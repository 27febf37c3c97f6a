"""``memory://`` fan-out: in this process only, for a worker run in a thread (tests)."""

from __future__ import annotations

import collections
import os
import threading

from runner.brokers.fanout import DEFAULT_TTL, MAX_PENDING, Fanout, ReplyBox, Subscription

_LOCK = threading.Condition()
_SUBSCRIBERS: dict[tuple[str, str], list[_Inbox]] = {}
_BOXES: dict[str, _Inbox] = {}


class _Inbox(Subscription, ReplyBox):
    def __init__(self, address: str = "") -> None:
        self.address = address
        self.items: collections.deque[bytes] = collections.deque(maxlen=MAX_PENDING)
        self.closed = False

    def get(self, timeout: float) -> list[bytes]:
        with _LOCK:
            if not self.items:
                _LOCK.wait_for(lambda: bool(self.items), max(0.0, timeout))
            taken = list(self.items)
            self.items.clear()
        return taken

    def close(self) -> None:
        with _LOCK:
            self.closed = True
            for inboxes in _SUBSCRIBERS.values():
                if self in inboxes:
                    inboxes.remove(self)
            _BOXES.pop(self.address, None)


class MemoryFanout(Fanout):
    def publish(self, exchange: str, body: bytes, ttl: float = DEFAULT_TTL) -> None:
        with _LOCK:
            for inbox in _SUBSCRIBERS.get((self.url.raw, exchange), ()):
                inbox.items.append(body)
            _LOCK.notify_all()

    def subscribe(self, exchange: str, ttl: float = DEFAULT_TTL,
                  expires: float | None = None) -> Subscription:
        inbox = _Inbox()
        with _LOCK:
            _SUBSCRIBERS.setdefault((self.url.raw, exchange), []).append(inbox)
        return inbox

    def reply_box(self) -> ReplyBox:
        inbox = _Inbox(os.urandom(8).hex())
        with _LOCK:
            _BOXES[inbox.address] = inbox
        return inbox

    def reply(self, address: str, body: bytes, ttl: float = DEFAULT_TTL) -> None:
        with _LOCK:
            inbox = _BOXES.get(address)
            if inbox is not None:
                inbox.items.append(body)
                _LOCK.notify_all()
