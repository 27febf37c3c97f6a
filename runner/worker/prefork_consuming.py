"""The consuming prefork pool: each child fetches its own batches from the broker, runs and
settles them (see :func:`runner.worker.child.consume_main`); the main process only watches.

Whenever it collects, the pool reads what each child posted on its board (the claims of its
batch, reported as :class:`~runner.worker.pool.Received`; the end of the batch, as
:class:`~runner.worker.pool.Settled`). Claims too large for the board come over the pipe. A
child that reaches ``max_tasks_per_child`` or ``max_memory_per_child`` ends by itself and is
replaced."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from runner.worker.board import CLAIMS_SIZE, Board, Claimed
from runner.worker.child import LOOK_WITHIN, ConsumeOptions, Look, consume_main
from runner.worker.pool import Event, Received, Returned, Settled
from runner.worker.prefork import PreforkPool, _Child, _fork
from runner.worker.trace import time_limit_of

if TYPE_CHECKING:  # pragma: no cover
    from runner.message import Message

logger = logging.getLogger("runner.worker")
ACTIVE_FOR = 0.5  # seconds after the last batch seen on a board that the boards are read often


class ConsumingPool(PreforkPool):
    """Children that fetch for themselves, with ``consume`` (queues, prefetch, limits)."""

    board_claims = CLAIMS_SIZE

    def __init__(self, *args: Any, consume: ConsumeOptions, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.consume = consume  # (remote control's add_consumer changes its queues)

    def start(self) -> None:
        #: when this process next wakes by itself (monotonic ms), for consuming children to
        #: know whether a batch would wait too long to be seen (see _wait_at_most)
        self.main_wake = _fork.RawArray("q", 1)
        self.seen_work = 0.0  # when a board last showed a new batch (monotonic)
        self.totals: dict[str, int] = {}  # task name -> messages the children received
        super().start()

    def _child_main(self, conn: Connection, board: Board) -> tuple[Callable, tuple]:
        return consume_main, (self.app, self._run, conn, board, self.main_wake, os.getpid(),
                              self.consume)

    def free_slots(self) -> int:
        return 0  # (nothing is submitted: children claim their own)

    def received_totals(self) -> dict[str, int]:
        return dict(self.totals)

    def renew(self) -> None:
        """Replace every process after its current job (remote control changed what they
        were forked with: queues, time limits): asked to stop, a child ends after its current
        job (what it claimed and did not start goes back) and is replaced with the pool's
        current :attr:`consume` options."""
        for child in self.children:
            if not child.retiring and not child.ended:
                child.board.ask_stop()

    def _ask_to_exit(self, child: _Child) -> None:
        child.board.ask_stop()

    def _watches(self, child: _Child) -> bool:
        return True  # (a child may claim any time)

    def _wait_at_most(self, now: float, timeout: float) -> float:
        if not self.consume.main_acks_early:
            return timeout
        # The worker acks the early-ack jobs it sees running: while batches come, the boards
        # are read every LOOK_WITHIN; a child whose batch would wait longer (this process
        # sleeps) wakes it with a Look. A batch posted before that was published is looked
        # at now.
        if now - self.seen_work < ACTIVE_FOR:
            timeout = min(timeout, LOOK_WITHIN)
        self.main_wake[0] = int((now + max(0.0, timeout)) * 1000)
        if any(c.board.claimed_after(c.batch) for c in self.children):
            timeout = 0.0
        return timeout

    def _between_reads(self, child: _Child) -> list[Event]:
        return self._look(child)

    def _read(self, child: _Child) -> list[Event]:
        """What ``child`` sent, then what it posted on its board since."""
        return super()._read(child) + self._look(child)

    def _received(self, child: _Child, message: Any) -> list[Event]:
        if isinstance(message, Look):
            return self._look(child)
        if isinstance(message, Claimed) and message.number > child.batch:  # (too large for
            # the board; else the board told of a later one)
            return self._superseded(child) + self._claimed(child, message)
        return []

    def _look(self, child: _Child) -> list[Event]:
        """What the child posted on its board since the last look: the end of the batch
        known here, and a batch claimed after it (only once that one ended)."""
        events: list[Event] = []
        if child.jobs and (settled := child.board.ended(child.batch)) is not None:
            events += self._ended(child, settled)
        claimed = child.board.read_claims(child.batch)
        if claimed is not None:
            events += self._superseded(child)
            events += self._claimed(child, claimed)
            if (settled := child.board.ended(child.batch)) is not None:
                events += self._ended(child, settled)
        return events

    def _superseded(self, child: _Child) -> list[Event]:
        """The child claimed a later batch, so the one known here is over (a child claims
        again only once its batch is settled): settled as far as the board says, else all."""
        if not child.jobs:
            return []
        settled = child.board.ended(child.batch)
        return self._ended(child, len(child.jobs) if settled is None else settled)

    def _claimed(self, child: _Child, claimed: Claimed) -> list[Event]:
        fetched = claimed.fetched()
        child.jobs = [next(self.job_ids) for _ in fetched]
        child.limits = [self._time_limit(f.message) for f in fetched]
        child.batch = claimed.number
        self.seen_work = time.monotonic()
        for name, count in claimed.totals.items():  # (what it claimed since its last claims
            # seen here too: a short batch may end, and the next be claimed, between two looks)
            self.totals[name] = self.totals.get(name, 0) + count - child.totals.get(name, 0)
        child.totals = claimed.totals
        return [Received(child.jobs, fetched)] if child.jobs else []

    def _time_limit(self, message: Message) -> float | None:
        """The hard time limit to watch; None (and logged) if looking it up failed: the child
        that runs the job looks it up too, and its failure is that job's, not this process's.
        """
        try:
            return time_limit_of(self.app, message)
        except Exception:  # noqa: BLE001 - one message must never stop the worker
            logger.exception("Task %s[%s]: looking up its time limit failed", message.task,
                             message.id)
            return None

    @staticmethod
    def _ended(child: _Child, settled: int) -> list[Event]:
        """A batch is over: ``settled`` jobs written, the rest (a warm shutdown) never
        started."""
        jobs = child.jobs
        events: list[Event] = [Settled(jobs[:settled])] if settled else []
        if settled < len(jobs):
            events.append(Returned(jobs[settled:], ran=False))
        child.done += len(jobs)
        child.jobs, child.limits = [], []
        return events
