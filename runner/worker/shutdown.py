"""How the worker stops: a warm shutdown (SIGTERM, SIGINT, :meth:`Shutdown.stop`) lets
running tasks finish and gives back what did not start; a second signal (or SIGQUIT) is a cold
shutdown, which stops running tasks and gives their messages back to the broker.

A part of :class:`runner.worker.worker.Worker` (it reads and changes the worker's state), in a
module of its own to keep each readable top to bottom.
"""

from __future__ import annotations

import logging
import signal

from runner.signals import worker_shutdown

logger = logging.getLogger("runner.worker")


class Shutdown:
    """The worker's stopping (mixed into the Worker)."""

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.on_signal)
        signal.signal(signal.SIGQUIT, self.on_cold_signal)

    def on_signal(self, signum, frame) -> None:
        if self.stopping:
            self.on_cold_signal(signum, frame)
            return
        running = len(self.pool.started_jobs()) if self.pool.holds_jobs else len(self.running)
        waiting = len(self.running) - running  # (handed to the pool, not started: they go back)
        logger.warning("worker: Warm shutdown (%s): finishing %d running task(s)%s",
                       signal.Signals(signum).name, running,
                       f"; {waiting} not started go back to the broker" if waiting > 0 else "")
        self.stopping = True
        self.pool.finish_current()
        self.waker.wake()

    def reload(self) -> None:
        """Celery's test worker ``reload()``: nothing to do here, tasks are looked up by name
        for each message, so one defined after the worker started is found."""

    def stop(self) -> None:
        """Ask for a warm shutdown from another thread: running tasks finish, unstarted ones
        go back, and :meth:`run` returns."""
        if not self.stopping:
            self.stopping = True
            self.pool.finish_current()
        self.waker.wake()

    def on_cold_signal(self, signum, frame) -> None:
        logger.warning("worker: Cold shutdown (%s)", signal.Signals(signum).name)
        self.stopping = self.killing = True
        self.waker.wake()
        self.pool.interrupt()

    def give_back_unstarted(self) -> None:
        """Stop consuming; what was fetched and never started goes back to the broker at once,
        for other workers to run."""
        if self.consumer.is_alive():
            self.consumer.stop()
        unstarted = [h.delivery for h in self.buffer if not h.acked]
        unstarted += [fetched.delivery for fetched in self.consumer.take()]
        self.buffer = []
        if unstarted:
            self.broker.requeue(unstarted)

    def shutdown(self) -> None:
        """Give back what did not start, stop the pool, store and ack what finished."""
        self.give_back_unstarted()
        self.handle(self.pool.stop(kill=self.killing))
        # A warm shutdown leaves the loop only when nothing runs; a cold one interrupts tasks,
        # whose messages go back to the broker to run again elsewhere.
        settled = set(self.pool.settled_jobs())
        started = set(self.pool.started_jobs())
        for job, held in self.running.items():
            if job in started:
                self.started_by_child(held)
            if job in settled:  # finished and stored by its child before it was stopped
                if self.ownership.owes_ack_after_child(held):
                    self.acks.append(held.delivery)
            else:
                self.give_back(held, started=job in started)
        self.running.clear()
        self.flush()
        self.writer.stop()  # returns once everything handed over is written
        if self.control.is_alive():
            self.control.stop()
        self.events.stop()
        self.run_calls()  # (none is left waiting)
        self.waker.close()
        if worker_shutdown.receivers:
            worker_shutdown.send(sender=self)
        logger.info("%s stopped.", self.hostname)
