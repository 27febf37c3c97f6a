"""``--autoscale=MAX,MIN``: the prefork pool grows with the backlog and shrinks when idle, as
Celery's autoscaler.

Once a second the worker counts its busy processes and, when all are busy, the messages
waiting: in its own buffer and in the broker's queues (one ``qsize`` per queue, only then).
With more work than processes the pool grows at once to cover it, up to MAX. RabbitMQ's count
leaves out the messages it pushed to the processes (their prefetch): there the pool grows by one
process a second while every process is busy. Once the work fits
in fewer processes for ``AUTOSCALE_KEEPALIVE`` seconds (30; Celery's environment variable), idle
processes are retired down to MIN. A busy process is never retired: no task is cut short.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

logger = logging.getLogger("runner.worker")

KEEPALIVE = float(os.environ.get("AUTOSCALE_KEEPALIVE", 30))
INTERVAL = 1.0  # seconds between two looks


class Autoscaler:
    def __init__(self, pool, qsize: Callable[[str], int], queues: Sequence[str],
                 max_size: int, min_size: int, keepalive: float = KEEPALIVE,
                 pushes: bool = False):
        self.pool, self.qsize, self.queues = pool, qsize, list(queues)
        self.pushes = pushes  # the broker pushes messages to processes: the queue's count
        # leaves out what they were given and have not started
        self.max_size, self.min_size, self.keepalive = max_size, min_size, keepalive
        self.next_look = 0.0
        self.last_full = 0.0  # when the work last needed every process (monotonic)

    def look(self, now: float, buffered: int) -> None:
        """Grow or shrink the pool if the work asks for it (at most once per INTERVAL)."""
        if now < self.next_look:
            return
        self.next_look = now + INTERVAL
        size, busy = self.pool.size, self.pool.busy()
        waiting = buffered
        if busy >= size:
            waiting += self._waiting()
            if self.pushes:  # (pushed work is not counted: one more while all are busy)
                waiting = max(waiting, 1)
        wanted = busy + waiting
        if wanted >= size:
            self.last_full = now
            if wanted > size < self.max_size:
                self._resize(size, min(self.max_size, wanted), busy, waiting)
        elif size > self.min_size and now - self.last_full >= self.keepalive:
            self._resize(size, max(self.min_size, wanted), busy, waiting)

    def _resize(self, size: int, new: int, busy: int, waiting: int) -> None:
        logger.info("autoscale: %s from %d to %d processes (%d busy, %d waiting)",
                    "growing" if new > size else "shrinking", size, new, busy, waiting)
        self.pool.resize(new)
        if new < size:
            self.last_full = self.next_look  # shrink step by step, a keepalive apart

    def _waiting(self) -> int:
        total = 0
        for queue in self.queues:
            try:
                total += self.qsize(queue)
            except Exception as exc:  # noqa: BLE001 - the broker may be back soon
                logger.debug("autoscale: counting %s failed: %s", queue, exc)
        return total
