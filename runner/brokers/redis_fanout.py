"""``redis://`` fan-out: exchanges are pub/sub channels, reply boxes are lists.

- ``<prefix>x:<exchange>``: a pub/sub channel. Redis keeps nothing for a subscriber that is
  absent, and disconnects one that reads too slowly (``client-output-buffer-limit pubsub``):
  bounded by the server, and a publisher never waits.
- ``<prefix>reply:<address>``: a list the caller BLPOPs; each reply refreshes its expiry
  (``ttl``), so a box whose reader left is deleted by Redis.
"""

from __future__ import annotations

import os
import time

from runner.brokers.fanout import DEFAULT_TTL, Fanout, ReplyBox, Subscription
from runner.config.urls import URL
from runner.reconnect import ConnectPolicy
from runner.stores.redis import OUTAGE_ERRORS, make_client, retrying


class _RedisSubscription(Subscription):
    def __init__(self, fanout: RedisFanout, channel: str):
        self.fanout, self.channel = fanout, channel
        self.pubsub = None
        self._open()

    def _open(self) -> None:
        def connect():
            pubsub = self.fanout.client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(self.channel)
            return pubsub
        self.pubsub = retrying("subscribe", self.fanout.url, connect, self.fanout.policy)

    def get(self, timeout: float) -> list[bytes]:
        deadline = time.monotonic() + max(0.0, timeout)
        out: list[bytes] = []
        try:
            while True:
                left = deadline - time.monotonic() if not out else 0.0
                message = self.pubsub.get_message(timeout=max(0.0, left))
                if message is not None and message.get("type") == "message":
                    out.append(message["data"])
                    continue
                if out or time.monotonic() >= deadline:
                    return out
        except OUTAGE_ERRORS:  # reconnect: what was published meanwhile is lost (best effort)
            self.close()
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            self._open()
            return out

    def close(self) -> None:
        try:
            self.pubsub.close()
        except Exception:  # noqa: BLE001 - going away
            pass


class _RedisReplyBox(ReplyBox):
    def __init__(self, fanout: RedisFanout):
        self.fanout = fanout
        self.address = os.urandom(12).hex()
        self.key = fanout.prefix + "reply:" + self.address

    def get(self, timeout: float) -> list[bytes]:
        client = self.fanout.client
        def pop() -> list[bytes]:
            got = client.blpop([self.key], timeout=max(0.01, timeout))
            if got is None:
                return []
            out = [got[1]]
            more = client.lpop(self.key, 1000)
            return out + list(more or [])
        return retrying("replies", self.fanout.url, pop, self.fanout.policy)

    def close(self) -> None:
        try:
            self.fanout.client.delete(self.key)
        except OUTAGE_ERRORS:
            pass


class RedisFanout(Fanout):
    def __init__(self, url: URL, transport_options: dict | None = None):
        super().__init__(url, transport_options)
        self.prefix = str(self.transport_options.get("global_keyprefix", "runner:"))
        self.policy = ConnectPolicy.from_options(self.transport_options)
        self.client = make_client(url, self.transport_options)

    def publish(self, exchange: str, body: bytes, ttl: float = DEFAULT_TTL) -> None:
        retrying("publish", self.url,
                 lambda: self.client.publish(self.prefix + "x:" + exchange, body), self.policy)

    def subscribe(self, exchange: str, ttl: float = DEFAULT_TTL,
                  expires: float | None = None) -> Subscription:
        return _RedisSubscription(self, self.prefix + "x:" + exchange)

    def reply_box(self) -> ReplyBox:
        return _RedisReplyBox(self)

    def reply(self, address: str, body: bytes, ttl: float = DEFAULT_TTL) -> None:
        key = self.prefix + "reply:" + address
        def push() -> None:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.rpush(key, body)
                pipe.expire(key, max(1, int(ttl + 0.999)))
                pipe.execute()
        retrying("reply", self.url, push, self.policy)

    def close(self) -> None:
        self.client.close()
