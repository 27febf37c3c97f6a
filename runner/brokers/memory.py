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
from runner.dead_letters import DeadLetter
from runner.message import Message


class _Store:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.queues: dict[str, list] = {}  # queue -> heap of (-priority, seq, body)
        self.claimed: dict[int, tuple] = {}  # seq -> (deadline, queue, priority, body)
        self.delayed: list = []  # heap of (eta, seq, queue, priority, body)
        self.delivered: dict[int, int] = {}  # seq -> times fetched (requeues not counted)
        self.dead: dict[str, DeadLetter] = {}
        self.seq = itertools.count()
        self.version = 0


_STORES: dict[str, _Store] = {}
_STORES_LOCK = threading.Lock()


class MemoryBroker(Broker):
    scheme = "memory"
    fanout_class = "runner.brokers.memory_fanout:MemoryFanout"
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
                body, prio = self.wire(message), message.priority or 0
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
                    count = store.delivered[seq] = store.delivered.get(seq, 0) + 1
                    out.append(Delivery(tag=seq, body=body, queue=queue,
                                        redelivered=count > 1, deliveries=count))
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
                self._store.delivered.pop(d.tag, None)

    def requeue(self, deliveries: Sequence[Delivery], started: bool = False) -> None:
        store = self._store
        with store.cond:
            for d in deliveries:
                claim = store.claimed.pop(d.tag, None)
                if claim:
                    _, queue, prio, body = claim
                    heapq.heappush(store.queues.setdefault(queue, []), (-prio, d.tag, body))
                    if not started:
                        store.delivered[d.tag] = store.delivered.get(d.tag, 1) - 1
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
                for _, seq, _ in purged:
                    store.delivered.pop(seq, None)
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

    def bury(self, letters: Sequence[DeadLetter]) -> None:
        with self._store.cond:
            self._store.dead.update((letter.key, letter) for letter in letters)

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._store.cond:
            letters = sorted(self._store.dead.values(), key=lambda d: (-d.died_at, d.key))
        return letters[:limit]

    def dead_letter_count(self) -> int:
        return len(self._store.dead)

    def remove_dead(self, keys: Sequence[str] | None = None) -> int:
        with self._store.cond:
            dead = self._store.dead
            if keys is None:
                count = len(dead)
                dead.clear()
                return count
            return sum(dead.pop(key, None) is not None for key in keys)
