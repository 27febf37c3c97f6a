"""The solo pool: each job runs inline in the worker's own thread."""

from __future__ import annotations

import time
from collections.abc import Sequence
from multiprocessing.connection import wait
from typing import Any

from runner.worker.pool import ColdShutdown, Event, Finished, Pool
from runner.worker.trace import Job


class SoloPool(Pool):
    def start(self) -> None:
        self._done: list[Event] = []

    def free_slots(self) -> int:
        return 1 if not self._done else 0

    def _submit(self, job: Job) -> None:
        self._busy = True
        try:
            self._done.append(Finished(self._run(job)))
        finally:
            self._busy = False

    def interrupt(self) -> None:
        if getattr(self, "_busy", False):
            raise ColdShutdown  # out of the task (no ``except Exception`` catches it)

    def collect(self, timeout: float, waitables: Sequence[Any] = ()) -> list[Event]:
        events, self._done = self._done, []
        if not events and timeout:
            if waitables:
                wait(list(waitables), timeout)
            else:
                time.sleep(min(timeout, 0.001))
        return events


