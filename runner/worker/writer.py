"""The writer: a thread that stores results, runs the middleware and acks, off the main loop.

The main loop hands it what each pass produced and goes straight back to feeding the pool; the
writer merges everything handed to it while it was busy into one batch, so the busier the
worker, the bigger (and cheaper per task) its writes. Within a batch the order is the worker's
promise: results stored, then middleware, then acks: a crash in between means a second run,
never a loss. :meth:`Writer.drain` waits until everything handed over is written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner
    from runner.backends.base import ResultBackend, ResultRecord
    from runner.brokers.base import Broker, Delivery
    from runner.message import Message

logger = logging.getLogger("runner.worker")

ERROR_PAUSE = 1.0  # seconds between attempts while the store fails


class Writer(threading.Thread):
    def __init__(self, write: Callable[[list, list, list], None]):
        super().__init__(name="runner-writer", daemon=True)
        self._write = write  # write(results, completed, acks), in that order
        self._cond = threading.Condition()
        self._results: list = []
        self._completed: list = []
        self._acks: list = []
        self._busy = False
        self._stopped = False

    def submit(self, results: list, completed: list, acks: list) -> None:
        if not (results or completed or acks):
            return
        with self._cond:
            self._results += results
            self._completed += completed
            self._acks += acks
            self._cond.notify_all()

    def drain(self) -> None:
        """Return once everything submitted so far is written."""
        with self._cond:
            while self._busy or self._results or self._completed or self._acks:
                if not self.is_alive():
                    return
                self._cond.wait(0.1)

    def stop(self) -> None:
        if not self.is_alive():
            if self._results or self._completed or self._acks:  # never started: write here
                self._write_until_done(self._results, self._completed, self._acks)
            return
        self.drain()
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self.join(5)

    def run(self) -> None:
        while True:
            with self._cond:
                while not (self._stopped or self._results or self._completed or self._acks):
                    self._cond.wait()
                if self._stopped and not (self._results or self._completed or self._acks):
                    return
                batch = self._results, self._completed, self._acks
                self._results, self._completed, self._acks = [], [], []
                self._busy = True
            try:
                self._write_until_done(*batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write_until_done(self, results: list, completed: list, acks: list) -> None:
        write_until_done(lambda: self._write(results, completed, acks), len(results), len(acks))


def write_until_done(write_batch: Callable[[], None], results: int, acks: int) -> None:
    """Write a batch, trying again while the store fails: a batch is never dropped."""
    while True:
        try:
            write_batch()
            return
        except Exception:  # noqa: BLE001 - keep the batch and try again
            logger.exception("writer: storing %d result(s) / %d ack(s) failed; retrying in %ss",
                             results, acks, ERROR_PAUSE)
            time.sleep(ERROR_PAUSE)


def write(app: Runner, broker: Broker, backend: ResultBackend, results: Sequence[ResultRecord],
          completed: Sequence[tuple[Message, str, ResultRecord | None]],
          acks: Sequence[Delivery]) -> None:
    """Store results, run the middleware, then ack: a crash in between means a second run,
    never a loss. Without middleware to run, store and ack are one step where the broker and
    backend share a store. Used by the writer thread and by the pool's child processes."""
    hooked = [c for c in completed if any(m.wants(c[0]) for m in app.middleware)]
    if not hooked and broker.ack_and_store(acks, results, backend):
        return
    if results:
        backend.store(results)
    for middleware in app.middleware:
        wanted = [c for c in hooked if middleware.wants(c[0])]
        if wanted:
            try:
                middleware.after_tasks_stored(app, wanted)
            except Exception:  # noqa: BLE001 - one hook's bug must not stop the worker
                logger.exception("Middleware %s failed after task(s) %s",
                                 type(middleware).__name__,
                                 ", ".join(f"{m.task}[{m.id}]" for m, _, _ in wanted))
    if acks:
        broker.ack(acks)
