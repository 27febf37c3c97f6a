"""The claims board: what a prefork child tells the main process through shared memory.

Each child has one :class:`Board`: a named structure of counters (:class:`Counters`) and, for
a child that fetches its own messages, a buffer of its claims. The protocol:

- **Who writes what.** The child writes every counter but ``stop``; the main process writes
  ``stop`` (a warm shutdown, autoscale, a renewal: end the batch after the running job) and,
  for a child it feeds batches to, resets the batch counters before it sends the next batch
  (the child is idle then, waiting on its pipe: never two writers at once).
- **A batch.** A consuming child claims messages, calls :meth:`Board.begin_batch` (batch
  ``number``: nothing started, nothing settled), posts the claims (:meth:`Board.post_claims`;
  too large for the buffer, they go by pipe), then for each job :meth:`Board.job_started`
  (the index of the job that runs, and its hard time limit's deadline, if any),
  :meth:`Board.jobs_settled` (how many are stored and acked where the child acks), and at the
  end :meth:`Board.end_batch` (number and settled count of the batch that is over).
- **Reading.** The main process reads the counters as one :class:`Snapshot`, consistent under
  a sequence lock: the child makes ``seq`` odd before it writes and even after, and a reader
  retries until it saw the same even ``seq`` before and after copying. The claims buffer is
  checked the same way and with a CRC (where stores may become visible out of order, a
  reader that sees the counters before the bytes reads again at its next look).
- **After a crash** (see :func:`settle_dead`): the jobs the snapshot shows settled are done,
  the job that ran (``started``) is the one that died with the process, those between
  ``settled`` and ``started`` ran but were not written (they run again: at least once), and
  the rest never started (they go back to the broker).
"""

from __future__ import annotations

import ctypes
import marshal
import zlib
from dataclasses import dataclass, field
from typing import Any

from runner.brokers.base import Delivery
from runner.message import Message
from runner.worker.consumer import Fetched

CLAIMS_SIZE = 64 * 1024  # bytes of claims a child posts in shared memory (larger: by pipe)
SPINS = 1000  # tries of a reader while the child writes (it writes a few words: never long)


class Counters(ctypes.Structure):
    """The counters of one child, in shared memory (see the module docstring)."""

    _fields_ = [
        ("seq", ctypes.c_int64),  # odd while the child writes
        ("batch", ctypes.c_int64),  # the batch the counters below are about
        ("started", ctypes.c_int64),  # index of the job that runs (or ran last)
        ("settled", ctypes.c_int64),  # jobs of the batch stored (and acked where it acks)
        ("deadline_ms", ctypes.c_int64),  # monotonic ms the running job's hard limit ends; 0
        ("claimed_batch", ctypes.c_int64),  # the batch whose claims are posted (0: none)
        ("claimed_size", ctypes.c_int64),  # bytes of them
        ("claimed_crc", ctypes.c_int64),
        ("ended_batch", ctypes.c_int64),  # the last batch that is over...
        ("ended_settled", ctypes.c_int64),  # ...and how many of its jobs were settled
        ("stop", ctypes.c_int64),  # written by the main process only
    ]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The counters as one consistent view."""

    batch: int
    started: int
    settled: int
    deadline_ms: int
    claimed_batch: int
    ended_batch: int
    ended_settled: int


@dataclass(slots=True)
class Claimed:
    """What a consuming child claimed, posted before it runs any of it (batch ``number``): for
    each readable message its delivery tag, queue, redelivered flag and body. Plain tuples
    marshal many times faster than decoded messages pickle, and this is on the path of every
    task. (The main process needs whole messages: it sends again those it acked early that did
    not run, e.g. on a cold shutdown.)"""

    number: int
    claims: list[tuple[object, str, bool, bytes]]

    #: task name -> messages the child received so far, this batch's included (cumulative:
    #: the main process reads only the latest claims, and may miss a whole short batch)
    totals: dict[str, int] = field(default_factory=dict)

    def fetched(self) -> list[Fetched]:
        """The claims as the worker sees them: deliveries (without body) and their messages."""
        return [Fetched(Delivery(tag, b"", queue, redelivered), Message.decode(body))
                for tag, queue, redelivered, body in self.claims]


class Board:
    """One child's counters and claims buffer. Made by the main process before it forks the
    child (``context``: a multiprocessing context, for its shared memory); ``claims_size`` 0
    for a child that is fed its batches (it posts no claims)."""

    def __init__(self, context: Any, claims_size: int = CLAIMS_SIZE):
        self.counters: Counters = context.RawValue(Counters)
        self.claims = context.RawArray("c", claims_size) if claims_size else None

    # -- the child's side ---------------------------------------------------------------------

    def _write(self, **values: int) -> None:
        counters = self.counters
        counters.seq += 1
        for name, value in values.items():
            setattr(counters, name, value)
        counters.seq += 1

    def begin_batch(self, number: int) -> None:
        self._write(batch=number, started=0, settled=0)

    def job_started(self, index: int, deadline_ms: int = 0) -> None:
        self._write(started=index, deadline_ms=deadline_ms)

    def job_ended(self) -> None:
        self._write(deadline_ms=0)

    def jobs_settled(self, count: int) -> None:
        self._write(settled=count)

    def end_batch(self, number: int, settled: int) -> None:
        self._write(settled=settled, ended_batch=number, ended_settled=settled)

    def post_claims(self, claimed: Claimed) -> bool:
        """Post ``claimed`` (False: it does not fit, or holds what marshal cannot write; the
        caller sends it by pipe)."""
        try:
            data = marshal.dumps((claimed.claims, claimed.totals))
        except ValueError:
            return False
        if self.claims is None or len(data) > len(self.claims):
            return False
        counters = self.counters
        counters.seq += 1
        counters.claimed_batch = 0  # (a reader of the old claims sees them gone)
        ctypes.memmove(self.claims, data, len(data))
        counters.claimed_size, counters.claimed_crc = len(data), zlib.crc32(data)
        counters.claimed_batch = claimed.number
        counters.seq += 1
        return True

    def stop_asked(self) -> bool:
        return bool(self.counters.stop)

    # -- the main process's side --------------------------------------------------------------

    def ask_stop(self) -> None:
        self.counters.stop = 1

    def reset_for_batch(self) -> None:
        """Before a batch is sent to a fed child (idle: the only writer now)."""
        counters = self.counters
        counters.seq += 1
        counters.started = counters.settled = counters.stop = 0
        counters.seq += 1

    def snapshot(self) -> Snapshot | None:
        """The counters as one view; None if the child kept writing (try at the next look)."""
        counters = self.counters
        for _ in range(SPINS):
            seq = counters.seq
            if seq & 1:
                continue
            view = Snapshot(counters.batch, counters.started, counters.settled,
                            counters.deadline_ms, counters.claimed_batch,
                            counters.ended_batch, counters.ended_settled)
            if counters.seq == seq:
                return view
        return None

    def claimed_after(self, number: int) -> bool:
        """Whether claims of a batch after ``number`` are posted (a quick look, unlocked)."""
        return self.counters.claimed_batch > number

    def read_claims(self, after: int) -> Claimed | None:
        """The posted claims, if they are of a batch after ``after`` and were read whole."""
        counters = self.counters
        seq = counters.seq
        number = counters.claimed_batch
        if seq & 1 or not number or number <= after or self.claims is None:
            return None
        size, crc = counters.claimed_size, counters.claimed_crc
        data = ctypes.string_at(self.claims, size)
        if counters.seq != seq or zlib.crc32(data) != crc:
            return None  # being rewritten, or not all of it visible yet: the next look reads it
        claims, totals = marshal.loads(data)
        return Claimed(number, claims, totals)

    def ended(self, number: int) -> int | None:
        """How many jobs of batch ``number`` were settled, if that batch is over."""
        view = self.snapshot()
        if view is None or view.ended_batch != number:
            return None
        return view.ended_settled


@dataclass(frozen=True, slots=True)
class DeadBatch:
    """What became of each job of the batch of a child that died (see :func:`settle_dead`)."""

    settled: list[int]  # stored (and acked where the child acks): done
    ran: list[int]  # ran but not written: they run again
    died_in: int | None  # the job that ran when the process died (None: between jobs)
    unstarted: list[int]  # never started: back to the broker


def settle_dead(jobs: list[int], view: Snapshot | None) -> DeadBatch:
    """The accounting of the batch ``jobs`` of a child that died, from its last counters."""
    if not jobs:
        return DeadBatch([], [], None, [])
    settled = min(view.settled, len(jobs)) if view is not None else 0
    if settled >= len(jobs):
        return DeadBatch(list(jobs), [], None, [])
    started = min(max(view.started if view is not None else 0, settled), len(jobs) - 1)
    return DeadBatch(list(jobs[:settled]), list(jobs[settled:started]), jobs[started],
                     list(jobs[started + 1:]))
