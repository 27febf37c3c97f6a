"""The asyncio pool with processes (``-P asyncio --processes N -c M``, the default with one
process): N processes (:mod:`runner.worker.aio_child`), each running up to M jobs at once on
its event loop, fed by the worker's main process as the threads pool is (its consumer thread
claims; early acks are made as a job is handed over, renewals and late acks as for any pool).

This process keeps what each process runs, and replaces a process that dies (its jobs in
flight are lost with it: ``WorkerLostError``, or delivered again with ``acks_late`` and
``task_reject_on_worker_lost``, as for a prefork child). A job past its hard time limit, or
terminated (``revoke(terminate=True)``), is cancelled by its process; if it has not ended
KILL_AFTER seconds later (it swallowed the ``CancelledError``, or blocks the loop in a plain
call), its process is killed and replaced: that job fails with ``TimeLimitExceeded`` (or is
recorded REVOKED), and the other jobs in flight there are lost as above.

Each process is handed up to ``-c`` jobs more than it runs (as far as the prefetch allows):
they wait there and start the moment a running one ends, without a round trip to this process
(which keeps up meanwhile). Such a job is "waiting" here until its process reports it started
(:class:`~runner.worker.pool.Began`): it is not acked early before that (the worker asks
:meth:`starts_now` which jobs start at once), its hard time limit counts from then, and if its
process dies first, or a warm shutdown comes, it goes back to the broker unstarted
(:class:`~runner.worker.pool.Returned`); revoked meanwhile, it is dropped.

A process that has been handed ``max_tasks_per_child`` tasks, or whose memory passed
``max_memory_per_child`` (it reports it with its results), retires: it is handed nothing more,
a new process takes its place at once, and it ends once its jobs have. (The memory is known
only once a result comes back, so a job handed over meanwhile still runs in the old process.)
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from runner.worker.aio_child import (
    RETURN_WAITING,
    Drop,
    Terminate,
    aio_child_main,
    pack_jobs,
)
from runner.worker.pool import Began, Event, Finished, Lost, Pool, Returned, TimedOut
from runner.worker.trace import Job, JobResult

logger = logging.getLogger("runner.worker")
_fork = multiprocessing.get_context("fork")

#: seconds a cancelled job (hard time limit, terminate) has to end before its process is killed
KILL_AFTER = 1.0


@dataclass(slots=True)
class _InFlight:
    name: str  # "task[id]", for the log
    started: float  # monotonic, as handed over
    limit: float | None  # its hard time limit
    kill_at: float | None  # its process is killed if it still runs then
    terminated: bool = False
    waiting: bool = False  # handed over beyond -c: not known to have started yet

    def begin(self, now: float) -> None:
        self.started, self.waiting = now, False
        if self.limit:
            self.kill_at = now + self.limit + KILL_AFTER


class _Proc:
    __slots__ = ("slot", "process", "conn", "jobs", "pending", "running", "handed", "rss_kib")

    def __init__(self, slot: int, process: Any, conn: Connection):
        self.slot = slot  # 1..processes (named runner-child-<slot>, as prefork's)
        self.process = process
        self.conn = conn
        self.jobs: dict[int, _InFlight] = {}
        self.pending: list[Job] = []  # handed over, sent with the next collect
        self.running = 0  # of its jobs, those not waiting (at most -c)
        self.handed = 0  # jobs handed to it
        self.rss_kib = 0  # its memory, as it last said (with max_memory_per_child)


class AsyncioProcessPool(Pool):
    """``size`` (``-c``) jobs in flight in each of ``processes`` processes, and as many
    waiting there to start."""

    holds_jobs = True

    def __init__(self, *args: Any, processes: int = 1, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.processes = processes

    def start(self) -> None:
        self.procs = [self._spawn(slot) for slot in range(1, self.processes + 1)]
        self.retiring: list[_Proc] = []  # replaced, ending once their jobs have
        self.finishing = False  # warm shutdown asked: the waiting jobs are to go back
        self._finish_sent = False

    def _all(self) -> list[_Proc]:
        return [*self.procs, *self.retiring]

    def _spawn(self, slot: int) -> _Proc:
        parent_end, child_end = _fork.Pipe()
        process = _fork.Process(target=aio_child_main, daemon=True, name=f"runner-child-{slot}",
                                args=(self.app, child_end, os.getpid(), self.hostname,
                                      self.accept, self.size, bool(self.max_memory_per_child)))
        process.start()
        child_end.close()
        return _Proc(slot, process, parent_end)

    def in_flight(self) -> int:
        return self.size * self.processes

    def free_slots(self) -> int:
        return sum(2 * self.size - len(p.jobs) for p in self.procs)

    def starts_now(self) -> int:
        """The next jobs submitted that start at once (the rest wait in their process)."""
        return sum(max(0, self.size - p.running) for p in self.procs)

    def _submit(self, job: Job) -> None:
        # one that starts at once if there is one, else the least busy one
        proc = min(self.procs, key=lambda p: (p.running >= self.size, len(p.jobs)))
        entry = _InFlight(f"{job.message.task}[{job.message.id}]", 0.0, job.time_limit, None)
        if proc.running < self.size:
            proc.running += 1
            entry.begin(time.monotonic())
        else:
            entry.waiting = job.report_start = True
        proc.jobs[job.id] = entry
        proc.pending.append(job)
        proc.handed += 1
        if self.max_tasks_per_child and proc.handed >= self.max_tasks_per_child:
            # (counted as handed, not as done: a job sent while its result is on the way
            # would otherwise run there too)
            logger.info("asyncio pool process %s: replaced after %d tasks (max_tasks_per_child);"
                        " it ends once they have", proc.process.pid, proc.handed)
            self._retire(self.procs.index(proc))

    def pids(self) -> list[int]:
        return [p.process.pid for p in self.procs]

    def job_pids(self) -> dict[int, int]:
        return {job: p.process.pid for p in self._all() for job in p.jobs}

    def started_jobs(self) -> list[int]:
        return [job for p in self._all() for job, e in p.jobs.items() if not e.waiting]

    def current_jobs(self) -> list[int]:
        return self.started_jobs()

    def drop_waiting(self, job_id: int) -> bool:
        """Drop ``job_id`` (revoked) if it waits to start in its process (recorded REVOKED
        there); False if it started."""
        for proc in self._all():
            entry = proc.jobs.get(job_id)
            if entry is not None and entry.waiting:
                self._flush(proc)
                self._post(proc, Drop(job_id))
                return True
        return False

    def terminate_job(self, job_id: int, signum: int = signal.SIGTERM) -> bool:
        """Cancel ``job_id`` in its process; kill the process if it still runs KILL_AFTER
        later."""
        for proc in self._all():
            entry = proc.jobs.get(job_id)
            if entry is None:
                continue
            self._flush(proc)
            self._post(proc, Terminate(job_id, signum))
            entry.terminated = True
            kill_at = time.monotonic() + KILL_AFTER
            entry.kill_at = min(entry.kill_at or kill_at, kill_at)
            return True
        return False

    def _flush(self, proc: _Proc) -> None:
        """Send ``proc`` the jobs handed over to it since the last time, in one message."""
        if proc.pending:
            jobs, proc.pending = proc.pending, []
            try:
                proc.conn.send_bytes(pack_jobs(jobs))
            except OSError:
                pass  # (noticed by collect)

    @staticmethod
    def _post(proc: _Proc, message: Any) -> None:
        """(A dead process is noticed by :meth:`collect`.)"""
        try:
            proc.conn.send(message)
        except OSError:
            pass

    def collect(self, timeout: float, waitables: Sequence[Any] = ()) -> list[Event]:
        every = self._all()
        for proc in every:
            self._flush(proc)
        if self.finishing and not self._finish_sent:
            self._finish_sent = True
            for proc in every:
                self._post(proc, RETURN_WAITING)
        kills = [e.kill_at for p in every for e in p.jobs.values() if e.kill_at]
        if kills:
            timeout = min(timeout, min(kills) - time.monotonic())
        wait([*(p.conn for p in every), *(p.process.sentinel for p in every), *waitables],
             max(0.0, timeout))
        events: list[Event] = []
        now = time.monotonic()
        for index, proc in enumerate(self.procs):
            events += self._read(proc)
            if not proc.process.is_alive():
                events += self._ended(proc)
                self._replace(index)
            elif any(e.kill_at and now >= e.kill_at for e in proc.jobs.values()):
                events += self._kill(proc, now)
                self._replace(index)
            elif self._worn(proc):
                self._retire(index)
        for proc in list(self.retiring):
            events += self._read(proc)
            if not proc.process.is_alive():
                events += self._ended(proc)
            elif any(e.kill_at and now >= e.kill_at for e in proc.jobs.values()):
                events += self._kill(proc, now)
            else:
                continue
            self.retiring.remove(proc)
            proc.conn.close()
        return events

    def _ended(self, proc: _Proc) -> list[Event]:
        """``proc`` ended: what it sent before, and its jobs left (lost with it)."""
        proc.process.join(0.1)
        events = self._read(proc)  # what it sent before it ended
        exitcode = proc.process.exitcode
        if proc.jobs:
            logger.error("asyncio pool process %s exited (%s) with %d task(s) in flight",
                         proc.process.pid, exitcode, proc.running)
        return events + self._gone(proc, exitcode)

    def _worn(self, proc: _Proc) -> bool:
        """Whether ``proc`` passed max_memory_per_child, as it said with its last results
        (max_tasks_per_child is seen as jobs are handed over)."""
        if not (self.max_memory_per_child and proc.rss_kib > self.max_memory_per_child):
            return False
        logger.info("asyncio pool process %s: replaced using %d KiB, over max_memory_per_child "
                    "(%d); it ends once its tasks have (%d in it)", proc.process.pid, proc.rss_kib,
                    self.max_memory_per_child, len(proc.jobs))
        return True

    def _retire(self, index: int) -> None:
        """Hand the process at ``index`` nothing more, a new one takes its place now, and it
        ends once its jobs have (those waiting there still start there)."""
        proc = self.procs[index]
        self._flush(proc)
        self._post(proc, None)
        self.retiring.append(proc)
        self.procs[index] = self._spawn(proc.slot)

    def _read(self, proc: _Proc) -> list[Event]:
        """What ``proc`` sent so far: results, and jobs that waited and started, or went back
        unstarted."""
        events: list[Event] = []
        while True:
            try:
                if not proc.conn.poll(0):
                    break
                sent: tuple[list[JobResult], list[int], list[int], int] = proc.conn.recv()
            except (EOFError, OSError):
                break
            results, began, returned, proc.rss_kib = sent
            if began:
                now = time.monotonic()
                for job in began:
                    entry = proc.jobs.get(job)
                    if entry is not None and entry.waiting:
                        entry.begin(now)
                        proc.running += 1
                events.append(Began(began))
            for result in results:
                entry = proc.jobs.pop(result.job_id, None)
                if entry is not None:
                    proc.running -= not entry.waiting
                    events.append(Finished(result))
            if returned:
                for job in returned:
                    proc.jobs.pop(job, None)
                events.append(Returned(returned, False))
        return events

    def _gone(self, proc: _Proc, exitcode: int | None) -> list[Event]:
        """The jobs of ``proc``, which died: those waiting go back unstarted, the others are
        lost with it."""
        waiting = [job for job, entry in proc.jobs.items() if entry.waiting]
        events: list[Event] = [Lost(job, exitcode) for job, entry in proc.jobs.items()
                               if not entry.waiting]
        if waiting:
            events.append(Returned(waiting, False))
        proc.jobs.clear()
        proc.running = 0
        return events

    def _kill(self, proc: _Proc, now: float) -> list[Event]:
        """Kill ``proc``, whose job did not stop once cancelled: that job timed out (or was
        terminated), the others in flight there are lost with it."""
        stuck = [e for e in proc.jobs.values() if e.kill_at and now >= e.kill_at]
        logger.error("Task %s did not stop %.1fs after it was cancelled: killing its process "
                     "%s (%d other task(s) in flight there are lost with it)",
                     ", ".join(e.name for e in stuck), KILL_AFTER, proc.process.pid,
                     proc.running - len(stuck))
        proc.process.kill()
        proc.process.join(5)
        events = self._read(proc)  # what ended meanwhile
        timed_out = [job for job, entry in proc.jobs.items()
                     if entry.limit and not entry.terminated and not entry.waiting
                     and now >= entry.started + entry.limit]
        for job in timed_out:
            events.append(TimedOut(job, proc.jobs.pop(job).limit))
        # (terminated ones are recorded REVOKED: see Worker.lost)
        return events + self._gone(proc, proc.process.exitcode)

    def _replace(self, index: int) -> None:
        """A new process in the place of the one at ``index``, which ended (during a warm
        shutdown too: it is handed nothing, and stops with the others)."""
        proc = self.procs[index]
        proc.conn.close()
        self.procs[index] = self._spawn(proc.slot)

    def finish_current(self) -> None:
        """Warm shutdown: the jobs in flight finish, those waiting go back unstarted (nothing
        new is handed over). Only a flag: this may run in a signal handler or another thread,
        and the pipes are written by the main loop alone (:meth:`collect`, :meth:`stop`)."""
        self.finishing = True

    def stop(self, kill: bool = False) -> list[Event]:
        every = self._all()
        for proc in every:
            if kill:
                proc.process.kill()
            else:
                self._flush(proc)
                if self.finishing and not self._finish_sent:
                    self._post(proc, RETURN_WAITING)
                self._post(proc, None)  # (it ends once nothing is in flight)
        for proc in every:
            proc.process.join(10 if not kill else 5)
            if proc.process.is_alive():
                proc.process.kill()
                proc.process.join()
        return [event for proc in every for event in self._read(proc)]
