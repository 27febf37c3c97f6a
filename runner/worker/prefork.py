"""The prefork pools' common part: child processes that run batches and settle them (see
:mod:`runner.worker.child`), watched through their boards (:mod:`runner.worker.board`).

There are two prefork pools, one module each, chosen by the worker at start-up (see
:mod:`runner.worker.ownership`): :class:`~runner.worker.prefork_consuming.ConsumingPool`,
whose children fetch their own batches, and :class:`~runner.worker.prefork_fed.FedPool`,
whose children run what the main process sends them. In both (:class:`PreforkPool`), the
parent enforces hard time limits by killing the child, notices a child that died (signal,
``os._exit``, OOM killer) and replaces it, grows and shrinks (autoscale), and stops them."""

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
from runner.worker.board import Board, Snapshot, settle_dead
from runner.worker.child import Fatal
from runner.worker.pool import Event, Lost, Pool, Returned, Settled, TimedOut

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable


logger = logging.getLogger("runner.worker")
_fork = multiprocessing.get_context("fork")
TIME_LIMIT_POLL = 0.01  # seconds between looks at a child whose batch holds a time limit


class _Child:
    __slots__ = ("slot", "process", "conn", "board", "jobs", "limits", "batch",
                 "done", "rss_kib", "retiring", "ended", "stale", "totals")

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
        self.totals: dict[str, int] = {}  # messages it received by task name, as last posted

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
    """Child processes that run batches and settle them: what both prefork pools share (see
    the module docstring). A subclass says what its children run (:meth:`_child_main`), what
    it reads from them (:meth:`_received`), and what it watches between batches."""

    defers_acks = tracks_started = holds_jobs = True
    #: claims a child's board holds (a consuming child posts its claims there)
    board_claims = 0

    def start(self) -> None:
        self.fatal: ConfigError | None = None  # a child was refused by the broker for good
        self.stopping = False  # a warm shutdown: children that end are not replaced
        self.children: list[_Child] = [self._spawn(slot) for slot in range(1, self.size + 1)]

    def _spawn(self, slot: int) -> _Child:
        """Start the child of ``slot`` (1..size; its process is named ``runner-child-<slot>``,
        Celery's pool process index: ``%i`` in a ``--logfile`` name)."""
        parent_end, child_end = _fork.Pipe()
        board = Board(_fork, self.board_claims)
        target, args = self._child_main(child_end, board)
        process = _fork.Process(target=target, args=args, daemon=True,
                                 name=f"runner-child-{slot}")
        process.start()
        child_end.close()
        return _Child(slot, process, parent_end, board)

    def _child_main(self, conn: Connection, board: Board) -> tuple[Callable, tuple]:
        """The function a new child runs, and its arguments."""
        raise NotImplementedError

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
            self._ask_to_exit(child)
        self.size = sum(1 for c in self.children if not c.retiring)

    def _ask_to_exit(self, child: _Child) -> None:
        """Ask an idle ``child`` to exit (it is retiring)."""
        raise NotImplementedError

    def pids(self) -> list[int]:
        """The pool's processes (retiring ones left out)."""
        return [c.process.pid for c in self.children if not c.retiring and not c.ended]

    def job_pids(self) -> dict[int, int]:
        """Job id -> pid of the process it is given to."""
        return {job: c.process.pid for c in self.children for job in c.jobs}

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

    # -- watching the children ----------------------------------------------------------------

    def collect(self, timeout: float, waitables: Sequence[Any] = ()) -> list[Event]:
        events: list[Event] = []
        watched = [c for c in self.children if self._watches(c) and not c.ended]
        now = time.monotonic()
        deadlines = [d for c in watched if (d := c.deadline()) is not None]
        if deadlines:
            timeout = min(timeout, min(deadlines) - now)
        if any(any(c.limits) for c in watched):  # a job with a limit may start any time
            timeout = min(timeout, TIME_LIMIT_POLL)
        timeout = self._wait_at_most(now, timeout)
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
            else:
                events += self._between_reads(child)
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

    def _watches(self, child: _Child) -> bool:
        """Whether :meth:`collect` waits on ``child``'s pipe (not ended)."""
        return bool(child.jobs)

    def _wait_at_most(self, now: float, timeout: float) -> float:
        """How long :meth:`collect` may wait, given ``timeout`` and the time limits."""
        return timeout

    def _between_reads(self, child: _Child) -> list[Event]:
        """Events of a child whose pipe had nothing this time."""
        return []

    def _read(self, child: _Child) -> list[Event]:
        """Everything ``child`` sent so far, as events."""
        events: list[Event] = []
        while True:
            try:
                if not child.conn.poll(0):
                    break
                message = child.conn.recv()
            except (EOFError, OSError):
                break
            if isinstance(message, Fatal):
                self.fatal = ConfigError(message.error)
            else:
                events += self._received(child, message)
        return events

    def _received(self, child: _Child, message: Any) -> list[Event]:
        """The events of one message ``child`` sent (a :class:`Fatal` is read here)."""
        raise NotImplementedError

    def _should_recycle(self, child: _Child) -> bool:
        """Whether an idle ``child`` is replaced now (its settings changed, or limits)."""
        return False

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
