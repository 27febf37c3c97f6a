"""``memory://``: an in-process broker for tests and single-process use.

Brokers with the same URL in one process share their queues, so a producer and an in-process
worker (threads or solo pool) meet. Nothing survives the process; delivery is at least once within
it (a requeued or expired claim is delivered again).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Sequence

from runner.brokers.base import Broker, Delivery
from runner.config.urls import URL
from runner.message import Message


class _Store:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.queues: dict[str, list] = {}  # queue -> heap of (-priority, seq, body)
        self.claimed: dict[int, tuple] = {}  # seq -> (deadline, queue, priority, body)
        self.delayed: list = []  # heap of (eta, seq, queue, priority, body)
        self.delivered: set[int] = set()  # seqs fetched before: the next fetch is a redelivery
        self.seq = itertools.count()
        self.version = 0


_STORES: dict[str, _Store] = {}
_STORES_LOCK = threading.Lock()


class MemoryBroker(Broker):
    scheme = "memory"
    acks_anywhere = False
    process_local = True

    def __init__(self, url: URL, transport_options: dict | None = None):
        super().__init__(url, transport_options)
        with _STORES_LOCK:
            self._store = _STORES.setdefault(url.raw, _Store())
        self._seen_version = -1

    def enqueue(self, messages: Sequence[Message]) -> None:
        store, now = self._store, time.time()
        with store.cond:
            for message in messages:
                body, prio = message.encode(), message.priority or 0
                if message.eta is not None and message.eta > now:
                    heapq.heappush(store.delayed,
                                   (message.eta, next(store.seq), message.queue, prio, body))
                else:
                    heapq.heappush(store.queues.setdefault(message.queue, []),
                                   (-prio, next(store.seq), body))
            store.version += 1
            store.cond.notify_all()

    def _release_due(self, now: float) -> None:
        store = self._store
        while store.delayed and store.delayed[0][0] <= now:
            _, seq, queue, prio, body = heapq.heappop(store.delayed)
            heapq.heappush(store.queues.setdefault(queue, []), (-prio, seq, body))
        for seq, (deadline, queue, prio, body) in list(store.claimed.items()):
            if deadline <= now:  # the claim expired: deliver again
                del store.claimed[seq]
                heapq.heappush(store.queues.setdefault(queue, []), (-prio, seq, body))

    def fetch(self, queues: Sequence[str], limit: int, consumer: str) -> list[Delivery]:
        store, now = self._store, time.time()
        out: list[Delivery] = []
        with store.cond:
            self._release_due(now)
            for queue in queues:
                heap = store.queues.get(queue)
                while heap and len(out) < limit:
                    negprio, seq, body = heapq.heappop(heap)
                    store.claimed[seq] = (now + self.visibility_timeout, queue, -negprio, body)
                    out.append(Delivery(tag=seq, body=body, queue=queue,
                                        redelivered=seq in store.delivered))
                    store.delivered.add(seq)
        return out

    def wait(self, timeout: float) -> bool:
        store = self._store
        with store.cond:
            if store.version == self._seen_version and timeout > 0:
                wake = timeout
                if store.delayed:
                    wake = min(timeout, max(0.0, store.delayed[0][0] - time.time()))
                store.cond.wait(wake)
            changed = store.version != self._seen_version or bool(
                store.delayed and store.delayed[0][0] <= time.time())
            self._seen_version = store.version
            return changed

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        with self._store.cond:
            for d in deliveries:
                self._store.claimed.pop(d.tag, None)
                self._store.delivered.discard(d.tag)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        store = self._store
        with store.cond:
            for d in deliveries:
                claim = store.claimed.pop(d.tag, None)
                if claim:
                    _, queue, prio, body = claim
                    heapq.heappush(store.queues.setdefault(queue, []), (-prio, d.tag, body))
            store.version += 1
            store.cond.notify_all()

    def extend(self, deliveries: Sequence[Delivery]) -> None:
        store, deadline = self._store, time.time() + self.visibility_timeout
        with store.cond:
            for d in deliveries:
                claim = store.claimed.get(d.tag)
                if claim:
                    store.claimed[d.tag] = (deadline, *claim[1:])

    def purge(self, queues: Sequence[str]) -> int:
        store, count = self._store, 0
        with store.cond:
            for queue in queues:
                purged = store.queues.pop(queue, [])
                store.delivered.difference_update(seq for _, seq, _ in purged)
                count += len(purged)
            kept = [item for item in store.delayed if item[2] not in queues]
            count += len(store.delayed) - len(kept)
            store.delayed = kept
            heapq.heapify(store.delayed)
        return count

    def qsize(self, queue: str) -> int:
        store = self._store
        with store.cond:
            return len(store.queues.get(queue, [])) + sum(
                1 for item in store.delayed if item[2] == queue)
