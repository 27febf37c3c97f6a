"""The fed prefork pool: the main process fetches, and sends each free child a batch of jobs
over its pipe; the child runs and settles it and sends the results back (see
:func:`runner.worker.child.child_main`). Used where children cannot fetch for themselves:
a broker or result store that lives in the worker's process (``memory://``).

Children are recycled after ``max_tasks_per_child`` jobs or past ``max_memory_per_child``,
and replaced after their batch when the settings they were forked with change."""

from __future__ import annotations

import os
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from runner.worker.board import Board
from runner.worker.child import child_main
from runner.worker.pool import Event, Finished, Returned
from runner.worker.prefork import PreforkPool, _Child
from runner.worker.trace import Job, JobResult


class FedPool(PreforkPool):
    """Children that run the batches the worker submits, one pipe message each."""

    def _child_main(self, conn: Connection, board: Board) -> tuple[Callable, tuple]:
        return child_main, (self.app, self._run, conn, board, bool(self.max_memory_per_child),
                            os.getpid(), self.hostname)

    def free_slots(self) -> int:
        return sum(1 for c in self.children if not c.jobs and not c.retiring)

    def free_batches(self) -> list[int]:
        size = max(1, self.batch_size)
        if self.max_tasks_per_child:
            return [max(1, min(size, self.max_tasks_per_child - c.done))
                    for c in self.children if not c.jobs and not c.retiring]
        return [size] * self.free_slots()

    def submit(self, jobs: list[Job]) -> None:
        child = next(c for c in self.children if not c.jobs and not c.retiring)
        child.jobs = [job.id for job in jobs]
        child.limits = [job.time_limit for job in jobs]
        child.board.reset_for_batch()
        child.conn.send(jobs)

    def renew(self) -> None:
        """Replace every process (remote control changed what they were forked with): an
        idle one now, a busy one after its batch."""
        for index, child in enumerate(self.children):
            if child.retiring or child.ended:
                continue
            if child.jobs:
                child.stale = True
            else:
                self._retire(child)
                self.children[index] = self._spawn(child.slot)

    def _ask_to_exit(self, child: _Child) -> None:
        try:
            child.conn.send(None)
        except OSError:
            pass

    def _received(self, child: _Child, message: Any) -> list[Event]:
        """The results of the batch sent to ``child``, in order."""
        results: list[JobResult] = message
        events: list[Event] = [Finished(result) for result in results]
        if len(results) < len(child.jobs):  # stopped early (finish_current)
            events.append(Returned(child.jobs[len(results):], ran=False))
        child.done += len(results)
        child.rss_kib = results[-1].rss_kib if results else 0
        child.jobs, child.limits = [], []
        return events

    def _should_recycle(self, child: _Child) -> bool:
        if child.stale:
            return True
        if self.max_tasks_per_child and child.done >= self.max_tasks_per_child:
            return True
        return bool(self.max_memory_per_child and child.rss_kib > self.max_memory_per_child)
