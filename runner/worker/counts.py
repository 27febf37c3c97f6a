"""Delivery counts a worker keeps itself, for messages whose broker does not count deliveries
(RabbitMQ's classic queues) where the result backend keeps no state either (``rpc://``).

The counts live in shared memory made before the pool forks, so a count survives the child
process a poison task kills, and each child sees the others'. A fixed table of slots keyed by
a hash of the task id: no lock (a child killed while holding one would stop the others), so
two children bumping one slot at the same instant may count once, and a colliding id starts a
slot again. The count is per worker: a message bouncing between workers is buried by the
first whose count passes the limit.
"""

from __future__ import annotations

import ctypes
import hashlib
import multiprocessing

SLOTS = 4096


class SharedCounts:
    def __init__(self) -> None:
        context = multiprocessing.get_context("fork")
        self._keys = context.RawArray(ctypes.c_uint64, SLOTS)
        self._counts = context.RawArray(ctypes.c_uint32, SLOTS)

    def bump(self, task_id: str) -> int:
        """Count one more delivery of ``task_id``; returns how many there were (a message
        never counted before is on its second: only redeliveries are counted here)."""
        key = int.from_bytes(hashlib.blake2b(task_id.encode(), digest_size=8).digest(),
                             "little") or 1
        slot = key % SLOTS
        if self._keys[slot] != key:
            self._keys[slot], self._counts[slot] = key, 1
        self._counts[slot] += 1
        return self._counts[slot]
