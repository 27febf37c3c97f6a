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

from runner.worker.aio_child import Terminate, aio_child_main, pack_jobs
from runner.worker.pool import Event, Finished, Lost, Pool, TimedOut
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


class _Proc:
    __slots__ = ("slot", "process", "conn", "jobs", "pending")

    def __init__(self, slot: int, process: Any, conn: Connection):
        self.slot = slot  # 1..processes (named runner-child-<slot>, as prefork's)
        self.process = process
        self.conn = conn
        self.jobs: dict[int, _InFlight] = {}
        self.pending: list[Job] = []  # handed over, sent with the next collect


class AsyncioProcessPool(Pool):
    """``size`` (``-c``) jobs in flight in each of ``processes`` processes."""

    def __init__(self, *args: Any, processes: int = 1, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.processes = processes

    def start(self) -> None:
        self.procs = [self._spawn(slot) for slot in range(1, self.processes + 1)]

    def _spawn(self, slot: int) -> _Proc:
        parent_end, child_end = _fork.Pipe()
        process = _fork.Process(target=aio_child_main, daemon=True, name=f"runner-child-{slot}",
                                args=(self.app, child_end, os.getpid(), self.hostname,
                                      self.accept, self.size))
        process.start()
        child_end.close()
        return _Proc(slot, process, parent_end)

    def free_slots(self) -> int:
        return sum(self.size - len(p.jobs) for p in self.procs)

    def _submit(self, job: Job) -> None:
        proc = min(self.procs, key=lambda p: len(p.jobs))  # the least busy one
        now, limit = time.monotonic(), job.time_limit
        proc.jobs[job.id] = _InFlight(f"{job.message.task}[{job.message.id}]", now, limit,
                                      now + limit + KILL_AFTER if limit else None)
        proc.pending.append(job)

    def pids(self) -> list[int]:
        return [p.process.pid for p in self.procs]

    def job_pids(self) -> dict[int, int]:
        return {job: p.process.pid for p in self.procs for job in p.jobs}

    def started_jobs(self) -> list[int]:
        """Every job handed over starts at once."""
        return [job for p in self.procs for job in p.jobs]

    def terminate_job(self, job_id: int, signum: int = signal.SIGTERM) -> bool:
        """Cancel ``job_id`` in its process; kill the process if it still runs KILL_AFTER
        later."""
        for proc in self.procs:
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
        for proc in self.procs:
            self._flush(proc)
        kills = [e.kill_at for p in self.procs for e in p.jobs.values() if e.kill_at]
        if kills:
            timeout = min(timeout, min(kills) - time.monotonic())
        wait([*(p.conn for p in self.procs), *(p.process.sentinel for p in self.procs),
              *waitables], max(0.0, timeout))
        events: list[Event] = []
        now = time.monotonic()
        for index, proc in enumerate(self.procs):
            events += self._read(proc)
            if not proc.process.is_alive():
                proc.process.join(0.1)
                events += self._read(proc)  # what it sent before it ended
                exitcode = proc.process.exitcode
                if proc.jobs:
                    logger.error("asyncio pool process %s exited (%s) with %d task(s) in "
                                 "flight", proc.process.pid, exitcode, len(proc.jobs))
                events += [Lost(job, exitcode) for job in proc.jobs]
                proc.jobs.clear()
                self._replace(index)
            elif any(e.kill_at and now >= e.kill_at for e in proc.jobs.values()):
                events += self._kill(proc, now)
                self._replace(index)
        return events

    def _read(self, proc: _Proc) -> list[Event]:
        """The results ``proc`` sent so far."""
        events: list[Event] = []
        while True:
            try:
                if not proc.conn.poll(0):
                    break
                results: list[JobResult] = proc.conn.recv()
            except (EOFError, OSError):
                break
            for result in results:
                if proc.jobs.pop(result.job_id, None) is not None:
                    events.append(Finished(result))
        return events

    def _kill(self, proc: _Proc, now: float) -> list[Event]:
        """Kill ``proc``, whose job did not stop once cancelled: that job timed out (or was
        terminated), the others in flight there are lost with it."""
        stuck = [e for e in proc.jobs.values() if e.kill_at and now >= e.kill_at]
        logger.error("Task %s did not stop %.1fs after it was cancelled: killing its process "
                     "%s (%d other task(s) in flight there are lost with it)",
                     ", ".join(e.name for e in stuck), KILL_AFTER, proc.process.pid,
                     len(proc.jobs) - len(stuck))
        proc.process.kill()
        proc.process.join(5)
        events = self._read(proc)  # what ended meanwhile
        exitcode = proc.process.exitcode
        for job, entry in proc.jobs.items():
            if entry.limit and not entry.terminated and now >= entry.started + entry.limit:
                events.append(TimedOut(job, entry.limit))
            else:  # terminated (recorded REVOKED: see Worker.lost), or lost with the process
                events.append(Lost(job, exitcode))
        proc.jobs.clear()
        return events

    def _replace(self, index: int) -> None:
        """A new process in the place of the one at ``index``, which ended (during a warm
        shutdown too: it is handed nothing, and stops with the others)."""
        proc = self.procs[index]
        proc.conn.close()
        self.procs[index] = self._spawn(proc.slot)

    def finish_current(self) -> None:
        """Warm shutdown: the jobs in flight finish (nothing new is handed over)."""

    def stop(self, kill: bool = False) -> list[Event]:
        for proc in self.procs:
            if kill:
                proc.process.kill()
            else:
                self._flush(proc)
                self._post(proc, None)  # (it ends once nothing is in flight)
        for proc in self.procs:
            proc.process.join(10 if not kill else 5)
            if proc.process.is_alive():
                proc.process.kill()
                proc.process.join()
        return [event for proc in self.procs for event in self._read(proc)]
