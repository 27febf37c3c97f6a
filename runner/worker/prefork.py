"""The prefork pool: child processes that run batches and settle them (see
:mod:`runner.worker.child`), watched through their boards (:mod:`runner.worker.board`).

The parent enforces hard time limits by killing the child, notices a child that died (signal,
``os._exit``, OOM killer) and replaces it, and recycles children after ``max_tasks_per_child``
jobs or past ``max_memory_per_child``."""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from runner.exceptions import ConfigError
from runner.worker.board import CLAIMS_SIZE, Board, Claimed, Snapshot, settle_dead
from runner.worker.child import (
    LOOK_WITHIN,
    ConsumeOptions,
    Fatal,
    Look,
    child_main,
    consume_main,
)
from runner.worker.pool import Event, Finished, Lost, Pool, Received, Returned, Settled, TimedOut
from runner.worker.trace import (
    Job,
    JobResult,
    time_limit_of,
)

if TYPE_CHECKING:  # pragma: no cover
    from runner.message import Message


logger = logging.getLogger("runner.worker")
_fork = multiprocessing.get_context("fork")
TIME_LIMIT_POLL = 0.01  # seconds between looks at a child whose batch holds a time limit
ACTIVE_FOR = 0.5  # seconds after the last batch seen on a board that the boards are read often


class _Child:
    __slots__ = ("slot", "process", "conn", "board", "jobs", "limits", "batch",
                 "done", "rss_kib", "retiring", "ended", "stale")

    def __init__(self, slot: int, process, conn: Connection, board: Board):
        self.slot = slot  # 1..size: Celery's pool process index
        self.process = process
        self.conn = conn
        self.board = board  # its counters and claims, in shared memory (see board.py)
        self.jobs: list[int] = []  # the batch it runs; empty: free
        self.limits: list[float | None] = []  # their hard time limits
        self.batch = 0  # the batch number its board has while it counts this batch
        self.done = 0
        self.rss_kib = 0  # its memory after its last batch (with max_memory_per_child)
        self.retiring = False  # asked to exit (autoscale shrinking): removed, not replaced
        self.ended = False  # exited during a warm shutdown: not replaced, no longer watched
        self.stale = False  # started before a change of settings: replaced after its batch

    def view(self) -> Snapshot | None:
        """The board's counters, if they are about :attr:`jobs` (not a batch not heard of)."""
        if not self.jobs:
            return None
        view = self.board.snapshot()
        return view if view is not None and view.batch == self.batch else None

    def running(self) -> int | None:
        """The job that runs now (None: between jobs, or free)."""
        view = self.view()
        if view is None or view.settled >= len(self.jobs) or view.started < view.settled:
            return None
        return self.jobs[min(view.started, len(self.jobs) - 1)]

    def deadline(self) -> float | None:
        """When the running job passes its hard time limit (monotonic), if it has one."""
        view = self.view()
        return view.deadline_ms / 1000 if view is not None and view.deadline_ms else None


class PreforkPool(Pool):
    """Child processes that run batches and settle them (see :mod:`runner.worker.child`).

    With :attr:`consume` set, each child fetches its own batches and the main process only
    watches: whenever it collects, it reads what each child posted on its board (the claims
    of its batch, reported as :class:`Received`; the end of the batch, as :class:`Settled`).
    Otherwise the worker submits batches of up to ``batch_size`` jobs, one pipe message each,
    and the results come back the same way.
    """

    defers_acks = tracks_started = True

    def __init__(self, *args: Any, consume: ConsumeOptions | None = None, **kwargs: Any):
        """``consume``: where the children fetch for themselves (else they are fed)."""
        super().__init__(*args, **kwargs)
        self.consume = consume

    def start(self) -> None:
        self.fatal: ConfigError | None = None  # a child was refused by the broker for good
        #: when this process next wakes by itself (monotonic ms), for consuming children to
        #: know whether a batch would wait too long to be seen (see collect)
        self.main_wake = _fork.RawArray("q", 1)
        self.seen_work = 0.0  # when a board last showed a new batch (monotonic)
        self.stopping = False  # a warm shutdown: children that end are not replaced
        self.children: list[_Child] = [self._spawn(slot) for slot in range(1, self.size + 1)]

    def _spawn(self, slot: int) -> _Child:
        """Start the child of ``slot`` (1..size; its process is named ``runner-child-<slot>``,
        Celery's pool process index: ``%i`` in a ``--logfile`` name)."""
        parent_end, child_end = _fork.Pipe()
        board = Board(_fork, CLAIMS_SIZE if self.consume is not None else 0)
        if self.consume is not None:
            target, args = consume_main, (self.app, self._run, child_end, board,
                                          self.main_wake, os.getpid(), self.consume)
        else:
            target, args = child_main, (self.app, self._run, child_end, board,
                                        bool(self.max_memory_per_child), os.getpid(),
                                        self.hostname)
        process = _fork.Process(target=target, args=args, daemon=True,
                                 name=f"runner-child-{slot}")
        process.start()
        child_end.close()
        return _Child(slot, process, parent_end, board)

    def free_slots(self) -> int:
        if self.consume is not None:
            return 0
        return sum(1 for c in self.children if not c.jobs and not c.retiring)

    def free_batches(self) -> list[int]:
        size = max(1, self.batch_size)
        if self.max_tasks_per_child:
            return [max(1, min(size, self.max_tasks_per_child - c.done))
                    for c in self.children if not c.jobs and not c.retiring]
        return [size] * self.free_slots()

    def busy(self) -> int:
        """Processes running a batch now."""
        return sum(1 for c in self.children if c.jobs and not c.retiring)

    def resize(self, size: int) -> None:
        """Autoscale: grow to ``size`` processes now; shrink by asking idle processes (the
        highest slots first) to exit: a busy one is kept, and a retiring one is watched as
        any other until it has exited (what it claimed meanwhile is reported or given back),
        then removed instead of replaced."""
        active = [c for c in self.children if not c.retiring]
        taken = {c.slot for c in self.children}
        free = (slot for slot in itertools.count(1) if slot not in taken)
        for _ in range(size - len(active)):
            self.children.append(self._spawn(next(free)))
        for child in sorted(active, key=lambda c: -c.slot)[:max(0, len(active) - size)]:
            if child.jobs:
                continue
            child.retiring = True
            if self.consume is not None:
                child.board.ask_stop()
            else:
                try:
                    child.conn.send(None)
                except OSError:
                    pass
        self.size = sum(1 for c in self.children if not c.retiring)

    def renew(self) -> None:
        """Replace every process after its current job (remote control changed what the
        processes were forked with: queues, time limits). A consuming child asked to stop
        ends after its current job (what it claimed and did not start goes back) and is
        replaced with the pool's current :attr:`consume` options; an idle fed child is
        replaced now, a busy one after its batch."""
        for index, child in enumerate(self.children):
            if child.retiring or child.ended:
                continue
            if self.consume is not None:
                child.board.ask_stop()
            elif child.jobs:
                child.stale = True
            else:
                self._retire(child)
                self.children[index] = self._spawn(child.slot)

    def pids(self) -> list[int]:
        """The pool's processes (retiring ones left out)."""
        return [c.process.pid for c in self.children if not c.retiring and not c.ended]

    def job_pids(self) -> dict[int, int]:
        """Job id -> pid of the process it is given to."""
        return {job: c.process.pid for c in self.children for job in c.jobs}

    def submit(self, jobs: list[Job]) -> None:
        child = next(c for c in self.children if not c.jobs and not c.retiring)
        child.jobs = [job.id for job in jobs]
        child.limits = [job.time_limit for job in jobs]
        child.board.reset_for_batch()
        child.conn.send(jobs)

    def finish_current(self) -> None:
        self.stopping = True  # (a consuming child stops now: a new one would fetch again)
        for child in self.children:
            child.board.ask_stop()

    def current_jobs(self) -> list[int]:
        return [job for c in self.children if (job := c.running()) is not None]

    def settled_jobs(self) -> list[int]:
        return [job for c in self.children if (view := c.view()) is not None
                for job in c.jobs[:view.settled]]

    def started_jobs(self) -> list[int]:
        return [job for c in self.children if (view := c.view()) is not None
                for job in c.jobs[:view.started + 1]]

    def collect(self, timeout: float, waitables: Sequence[Any] = ()) -> list[Event]:
        events: list[Event] = []
        watched = [c for c in self.children
                   if (c.jobs or self.consume is not None) and not c.ended]
        now = time.monotonic()
        deadlines = [d for c in watched if (d := c.deadline()) is not None]
        if deadlines:
            timeout = min(timeout, min(deadlines) - now)
        if any(any(c.limits) for c in watched):  # a job with a limit may start any time
            timeout = min(timeout, TIME_LIMIT_POLL)
        if self.consume is not None and self.consume.main_acks_early:
            # The worker acks the early-ack jobs it sees running: while batches come, the
            # boards are read every LOOK_WITHIN; a child whose batch would wait longer (this
            # process sleeps) wakes it with a Look. A batch posted before that was published
            # is looked at now.
            if now - self.seen_work < ACTIVE_FOR:
                timeout = min(timeout, LOOK_WITHIN)
            self.main_wake[0] = int((now + max(0.0, timeout)) * 1000)
            if any(c.board.claimed_after(c.batch) for c in self.children):
                timeout = 0.0
        ready = set(wait([*(c.conn for c in watched),
                          *(c.process.sentinel for c in self.children if not c.ended),
                          *waitables],
                         max(0.0, timeout)))
        recycle, gone = [], []
        for index, child in enumerate(self.children):
            if child.ended:
                continue
            if child.conn in ready:
                events += self._read(child)
                if not child.jobs and not self.stopping and self._should_recycle(child):
                    recycle.append(index)
                    continue
            elif self.consume is not None:
                events += self._look(child)
            if child.process.sentinel in ready or not child.process.is_alive():
                events += self._read(child)  # what it sent before it ended
                if child.jobs:
                    child.process.join(0.1)
                    events += self._died(child, Lost(0, child.process.exitcode))
                gone += self._replace_at(index, child)
            elif (deadline := child.deadline()) is not None and time.monotonic() >= deadline:
                child.process.kill()
                child.process.join(1)
                events += self._read(child)
                if child.jobs:
                    view = child.board.snapshot()
                    started = view.started if view is not None else 0
                    limit = child.limits[min(started, len(child.limits) - 1)]
                    events += self._died(child, TimedOut(0, limit or 0.0))
                gone += self._replace_at(index, child)
        for index in recycle:
            self._retire(self.children[index])
            self.children[index] = self._spawn(self.children[index].slot)
        for index in reversed(gone):  # retired by autoscale: not replaced
            del self.children[index]
        return events

    def _read(self, child: _Child) -> list[Event]:
        """Everything ``child`` sent so far, and then posted on its board, as events."""
        events: list[Event] = []
        while True:
            try:
                if not child.conn.poll(0):
                    break
                message = child.conn.recv()
            except (EOFError, OSError):
                break
            if isinstance(message, Look):
                events += self._look(child)
            elif isinstance(message, Claimed):  # too large for the board
                if message.number > child.batch:  # (else the board told of a later one)
                    events += self._superseded(child)
                    events += self._claimed(child, message)
            elif isinstance(message, Fatal):
                self.fatal = ConfigError(message.error)
            else:  # the results of a batch sent here, in order
                results: list[JobResult] = message
                events += [Finished(result) for result in results]
                if len(results) < len(child.jobs):  # stopped early (finish_current)
                    events.append(Returned(child.jobs[len(results):], ran=False))
                child.done += len(results)
                child.rss_kib = results[-1].rss_kib if results else 0
                child.jobs, child.limits = [], []
        if self.consume is not None:
            events += self._look(child)
        return events

    def _look(self, child: _Child) -> list[Event]:
        """What a consuming child posted on its board since the last look: the end of the
        batch known here, and a batch claimed after it (only once that one ended)."""
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
        """A consuming child's batch is over: ``settled`` jobs written, the rest (a warm
        shutdown) never started."""
        jobs = child.jobs
        events: list[Event] = [Settled(jobs[:settled])] if settled else []
        if settled < len(jobs):
            events.append(Returned(jobs[settled:], ran=False))
        child.done += len(jobs)
        child.jobs, child.limits = [], []
        return events

    @staticmethod
    def _died(child: _Child, event: Lost | TimedOut) -> list[Event]:
        """What became of each job of the batch of a child that died (see child.py)."""
        dead = settle_dead(child.jobs, child.board.snapshot())
        events: list[Event] = [Settled(dead.settled)] if dead.settled else []
        if dead.ran:
            events.append(Returned(dead.ran, ran=True))
        if dead.died_in is not None:
            event.job_id = dead.died_in
            events.append(event)
        if dead.unstarted:
            events.append(Returned(dead.unstarted, ran=False))
        child.jobs, child.limits = [], []
        return events

    def _should_recycle(self, child: _Child) -> bool:
        if self.consume is not None:  # a consuming child ends by itself (see consume_main)
            return False
        if child.stale:
            return True
        if self.max_tasks_per_child and child.done >= self.max_tasks_per_child:
            return True
        return bool(self.max_memory_per_child and child.rss_kib > self.max_memory_per_child)

    def _retire(self, child: _Child) -> None:
        try:
            child.conn.send(None)
        except OSError:
            pass
        child.process.join(5)
        if child.process.is_alive():
            child.process.kill()
            child.process.join()
        child.conn.close()

    def _replace_at(self, index: int, child: _Child) -> list[int]:
        """Start a new process in the slot of ``child``, which exited; ``[index]`` when it was
        retiring instead (the caller removes it). Not during a warm shutdown, where a new
        consuming child would claim messages (and run them) while the worker stops."""
        if self.stopping:
            child.process.join(1)
            child.ended = True
            return []
        child.process.join(1)
        child.conn.close()
        if child.retiring:
            return [index]
        self.children[index] = self._spawn(child.slot)
        return []

    def terminate_job(self, job_id: int, signum: int = signal.SIGTERM) -> bool:
        for child in self.children:
            if child.running() == job_id:
                # children ignore SIGTERM (see child.py): terminate means kill
                os.kill(child.process.pid, signal.SIGKILL if signum == signal.SIGTERM
                        else signum)
                return True
        return False

    def stop(self, kill: bool = False) -> list[Event]:
        for child in self.children:
            child.board.ask_stop()  # a consuming child ends its batch and stops fetching
            if kill:
                child.process.kill()
            else:
                try:
                    child.conn.send(None)
                except OSError:
                    pass
        for child in self.children:
            child.process.join(10)
            if child.process.is_alive():
                child.process.kill()
                child.process.join()
        # What they sent last (a consuming child may have claimed a batch meanwhile): the
        # worker settles or gives back each job of it.
        return [event for child in self.children for event in self._read(child)]


