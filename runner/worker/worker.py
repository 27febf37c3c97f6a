"""The worker: claim messages, run them in the pool, store results, ack. Read top to bottom.

Who claims, stores and acks is decided once at start-up (:mod:`runner.worker.ownership`).
With the prefork pool (and results any process can write: not ``memory://``), each child
process claims, runs and settles its own batches (see :mod:`runner.worker.child`) and this loop
only watches, through the children's boards (:mod:`runner.worker.board`): it learns what each
child holds, renews those claims, acks early-ack messages it sees running (on AMQP the children
ack their own), enforces time limits and replaces children that die. Otherwise (the threads
and solo pools) a consumer thread claims into a buffer and this loop hands the messages to the
pool. Beside it, a thread answers remote control (:mod:`runner.control`) and the worker sends
its events (:mod:`runner.worker.events`).

Guarantees:
- A message is acked only after its result is stored (``acks_late``), or just after its task
  starts (the default, as Celery's): prefetched messages that never started are not acked,
  and go back to the broker on shutdown, or after the visibility timeout if the worker is
  killed.
- Claims of messages held by this worker are renewed while it lives, so a long task is never
  given to a second worker.
- A task whose process dies is recorded as FAILURE (WorkerLostError), or delivered again when
  ``acks_late`` and ``task_reject_on_worker_lost`` are both on: never PENDING forever.
- Warm shutdown (SIGTERM, SIGINT): running tasks finish, unstarted ones go back. A second signal
  is a cold shutdown: running tasks are stopped and their messages go back to the broker.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING

from runner import states
from runner.backends.base import ResultRecord
from runner.brokers.base import Delivery
from runner.control.loop import ControlLoop, wait_listening
from runner.message import Message
from runner.middleware import Middleware
from runner.signals import task_received, worker_init, worker_ready
from runner.worker.autoscale import Autoscaler
from runner.worker.child import BATCH_BELOW, RECHECK_AFTER
from runner.worker.consumer import Consumer, Fetched, Waker
from runner.worker.dead import Burial, burial, bury, sort_out
from runner.worker.events import WorkerEvents
from runner.worker.held import Held, WorkerOptions
from runner.worker.outcomes import JobOutcomes
from runner.worker.ownership import Ownership
from runner.worker.panel import Panel
from runner.worker.pool import (
    Began,
    ColdShutdown,
    Finished,
    Lost,
    Pool,
    Received,
    Returned,
    Settled,
    TimedOut,
)
from runner.worker.pools import build_pool
from runner.worker.pools import pool_class as pool_class_of
from runner.worker.prefork import PreforkPool
from runner.worker.shutdown import Shutdown
from runner.worker.trace import (
    acks_late_of,
    announce_received,
    delivery_info_of,
    discard_reason,
    job_for,
    rejects_on_worker_lost,
    time_limit_of,
)
from runner.worker.writer import Writer, write

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner

logger = logging.getLogger("runner.worker")

IDLE_WAIT = 1.0  # longest the main loop sleeps (signals and new messages wake it sooner)
HOUSEKEEPING_INTERVAL = 0.5  # seconds between revoke checks (terminate, drop prefetched)
CLEANUP_INTERVAL = 300.0  # seconds between deletions of expired results
EARLY_ACK_AFTER = 0.005  # a job of a batch seen running this long is acked (if it acks early)
REVOKED_KEPT = 10_000  # ids of revoked tasks remembered for ``inspect revoked``


class Worker(JobOutcomes, Shutdown):
    def __init__(self, app: Runner, options: WorkerOptions):
        self.app = app
        self.options = options
        self.hostname = options.hostname or f"celery@{socket.gethostname()}"
        self.consumer_id = f"{self.hostname}:{os.getpid()}"
        self.accept = app.task_accept
        if app.security is not None:  # a key or store that cannot be read: one error now
            app.security.check(signing=app.conf.task_serializer == "auth",
                               verifying=app.verifier is not None)
        self.broker = app.broker
        self.backend = app.backend
        self.broker.check(options.queues)  # refused credentials: one error now, not later
        self.backend.check()
        most = options.autoscale[0] if options.autoscale else options.in_flight
        self.capacity = most * options.prefetch
        transport = app.conf.broker_transport_options
        self.visibility_timeout = float(getattr(transport, "visibility_timeout", 30.0))
        self.polling_interval = float(getattr(transport, "polling_interval", 0.005))
        self.buffer: list[Held] = []  # fetched, not started
        self.running: dict[int, Held] = {}
        self.results: list[ResultRecord] = []  # to store, then...
        self.completed: list[tuple[Message, str, ResultRecord | None]] = []  # for middleware
        self.acks: list[Delivery] = []  # ...to ack, in this order
        self.job_ids = itertools.count(1)
        self.runtimes: dict[str, float] = {}  # task name -> recent run time (moving average)
        self.stopping = False  # warm shutdown asked
        self.killing = False  # cold shutdown asked
        self.terminated: dict[str, int] = {}  # task id -> signal its process was killed with
        self.total: dict[str, int] = {}  # task name -> messages received (inspect stats)
        self.revoked_ids: dict[str, None] = {}  # revoked task ids seen, oldest first
        self.calls: collections.deque = collections.deque()  # (function, future) for the loop
        self.writer = Writer(self.write)  # stores results and acks off the main loop
        self.waker = Waker()  # new messages, thread-pool results and signals wake the loop
        pool_class = pool_class_of(options.pool, options.processes)
        #: who claims, stores and acks (see runner.worker.ownership)
        self.ownership = Ownership.decide(issubclass(pool_class, PreforkPool), self.broker,
                                          self.backend, pool_class.defers_acks)
        self.pool: Pool = build_pool(pool_class, app, options, self.hostname, self.ownership,
                                     self.waker, self.job_ids)
        self.consumer = Consumer(self.broker, options.queues, self.consumer_id, self.capacity,
                                 self.waker, revoked=self.backend.revoked)
        self.autoscaler = (Autoscaler(self.pool, self.broker.qsize, options.queues,
                                      *options.autoscale, pushes=self.broker.pushes)
                           if options.autoscale and isinstance(self.pool, PreforkPool) else None)
        #: remote control: a thread of this process listening for commands (see runner.control)
        self.control = ControlLoop(app, self.hostname, Panel(self), self.call_soon)
        self.events = WorkerEvents(self, options.heartbeat)  # worker-*, and task-* with -E
        now = time.monotonic()
        self.next_extend = now + self.visibility_timeout / 3
        self.next_housekeeping = now + HOUSEKEEPING_INTERVAL
        self.next_cleanup = now

    # -- the main loop ----------------------------------------------------------------------

    def run(self, install_signals: bool = True) -> None:
        """Work until a shutdown signal (or :meth:`stop`); return after a clean warm or cold
        shutdown. A worker run in a thread (tests) leaves signals to the main thread."""
        if worker_init.receivers:  # before the pool forks: its children inherit what it sets
            worker_init.send(sender=self)
        if install_signals:
            self.install_signal_handlers()
        self.events.start()  # (before the pool forks: its children send task events too)
        self.pool.start()
        if self.pool.free_slots():  # (else the pool's processes fetch for themselves)
            self.consumer.start()
        self.writer.start()
        self.control.start()
        wait_listening(self.control)
        self.events.started()
        if worker_ready.receivers:
            worker_ready.send(sender=self)
        logger.info("%s ready.", self.hostname)
        try:
            while not self.killing and not (self.stopping and not self.running):
                if self.calls:
                    self.run_calls()
                self.receive_fetched()
                self.dispatch()
                self.wait_and_collect()
                self.flush()
                self.housekeeping()
        except ColdShutdown:  # a task running inline was stopped: its message goes back
            pass
        finally:
            self.shutdown()

    def receive_fetched(self) -> None:
        """Take what the consumer claimed; drop what was revoked or expired meanwhile."""
        if self.consumer.fatal is not None:  # e.g. the broker refused the password
            raise self.consumer.fatal
        if getattr(self.pool, "fatal", None) is not None:
            raise self.pool.fatal
        if self.stopping:
            self.give_back_unstarted()
            return
        fetched = self.consumer.take()
        if not fetched:
            return
        fetched, burials = sort_out(self.app, fetched, self.hostname)
        self.bury(burials)
        now, checked = time.time(), time.monotonic()
        for item in fetched:
            held = self.receive(item)
            if held is not None and self.buffer_or_discard(held, item.revoked, now, checked):
                if task_received.receivers:  # (a revoked one is only task_revoked, as Celery)
                    announce_received(self, held.message, self.hostname,
                                      delivery_info_of(held.delivery, held.message))

    def receive(self, fetched: Fetched, log: bool = True) -> Held | None:
        """The message as this worker holds it; None if looking at it failed (a bug, or a
        task class whose options raise): it is buried, and the worker goes on."""
        delivery, message = fetched.delivery, fetched.message
        assert message is not None  # (unreadable ones were sorted out)
        if log:
            logger.info("Task %s[%s] received", message.task, message.id)
        self.total[message.task] = self.total.get(message.task, 0) + 1
        try:
            return Held(delivery, message, acks_late_of(self.app, message),
                        reject_on_worker_lost=rejects_on_worker_lost(self.app, message))
        except Exception as exc:  # noqa: BLE001 - one message must never stop the worker
            logger.exception("Task %s[%s]: looking up its options failed", message.task,
                             message.id)
            if not log:  # a child runs it already: it acks it once it is settled
                return Held(delivery, message, acks_late=True)
            self.bury([burial(self.app, delivery, message, exc, self.hostname)])
            return None

    def received_counts(self) -> dict[str, int]:
        """Task name -> messages received (``inspect stats``' total; heartbeats' processed)."""
        return self.pool.received_totals() or self.total

    def bury(self, burials: list[Burial]) -> None:
        """Bury messages this worker holds (see :mod:`runner.worker.dead`); their slots are
        free again. Where the children ack their own, it is theirs to ack."""
        if burials:
            bury(self.app, self.broker, burials, ack=self.ownership.main_settles)
            self.consumer.release(len(burials))

    def drop_revoked(self, held: list[Held]) -> None:
        revoked = self.backend.revoked([h.message.id for h in held])
        now, checked = time.time(), time.monotonic()
        for h in held:
            self.buffer_or_discard(h, h.message.id in revoked, now, checked)

    def buffer_or_discard(self, held: Held, revoked: bool, now: float, checked: float) -> bool:
        """Buffer a message to start (True), or record it REVOKED if revoked or expired
        meanwhile."""
        held.checked = checked
        why = discard_reason(held.message, revoked, now)
        if why is None:
            self.buffer.append(held)
            return True
        self.finish_revoked(held, why)
        self.consumer.release()
        return False

    def dispatch(self) -> None:
        """Start buffered messages on free pool slots, highest priority first: as many per
        slot as the pool takes in one batch, shared evenly between the free slots."""
        if self.stopping or not self.buffer:
            self.consumer.set_hungry(not self.stopping)
            return
        rooms = self.pool.free_batches()
        if rooms:
            if len(self.buffer) > 1:
                self.buffer.sort(key=lambda h: -(h.message.priority or 0))
            share = -(-len(self.buffer) // len(rooms))
            count = sum(min(room, share) for room in rooms)
            starting, self.buffer = self.buffer[:count], self.buffer[count:]
            stale = time.monotonic() - RECHECK_AFTER
            if any(h.checked < stale for h in starting):  # waited a while: revoked since?
                waiting = len(self.buffer)
                self.drop_revoked(starting)  # what is still to run is put back at the end
                starting, self.buffer = self.buffer[waiting:], self.buffer[:waiting]
            for room in rooms:
                if not starting:
                    break
                batch = [starting.pop(0)]
                if not self.alone(batch[0]):
                    while len(batch) < min(room, share) and starting and not self.alone(
                            starting[0]):
                        batch.append(starting.pop(0))
                self.start(batch)
            self.buffer[:0] = starting  # what did not fit in a batch goes first next time
        # With messages still waiting to start, the consumer may wait for a batch of slots.
        self.consumer.set_hungry(not self.buffer)

    def alone(self, held: Held) -> bool:
        """Whether a message must be sent to the pool by itself: unless its task is known to
        be short, since the jobs behind it in a batch wait for it; and with a hard time limit,
        which is watched per batch."""
        message = held.message
        if self.runtimes.get(message.task, BATCH_BELOW) >= BATCH_BELOW:
            return True
        return bool(time_limit_of(self.app, message))

    def start(self, batch: list[Held]) -> None:
        jobs = []
        at_once = self.pool.starts_now()  # the others wait in the pool: acked as they start
        for index, held in enumerate(batch):
            message = held.message
            task = self.app.tasks.get(message.task)
            early = self.ownership.ack_on_submit(held)
            if early and index < at_once:
                self.acks.append(held.delivery)  # early ack: Celery's default
                held.acked = True
            if (not self.pool.tracks_started and task is not None
                    and task.effective("track_started")):
                self.results.append(ResultRecord(message.id, states.STARTED, meta={
                    "name": message.task, "worker": self.hostname, "pid": os.getpid()},
                    reply_to=message.reply_to))
            held.job = next(self.job_ids)
            held.started = time.monotonic()
            self.running[held.job] = held
            job = job_for(self.app, held.job, held.delivery, message)
            job.acked = held.acked  # (a process that settles it does not ack it again)
            job.ack_on_start = early and not held.acked
            jobs.append(job)
        for middleware in self.app.middleware:  # e.g. a pipeline step is now `running`
            if type(middleware).before_tasks_start is Middleware.before_tasks_start:
                continue
            wanted = [h.message for h in batch if middleware.wants(h.message)]
            if wanted:
                middleware.before_tasks_start(self.app, wanted)
        self.pool.submit(jobs)

    def ack_started(self) -> None:
        """Early acks where the pool defers them: a job seen running for EARLY_ACK_AFTER is
        acked (a job that ends sooner is acked with its result, by whoever stores it)."""
        now = time.monotonic()
        for job in self.pool.current_jobs():
            held = self.running.get(job)
            if held is None or held.acked or held.acks_late:
                continue
            if not held.seen_running:
                held.seen_running = now
            elif now - held.seen_running >= EARLY_ACK_AFTER:
                self.acks.append(held.delivery)
                held.acked = True

    def wait_and_collect(self) -> None:
        """Wait until a job ends, the consumer brings messages, a signal comes or a timer is
        due, whichever is first."""
        if self.results:  # a STARTED or REVOKED state is stored now, not after the wait
            self.flush()
        timeout = max(0.0, min(IDLE_WAIT, self.next_timer() - time.monotonic()))
        if self.consumer.inbox or self.stopping:
            timeout = 0.0
        elif self.acks:  # early acks of tasks that just started: hand them over soon
            timeout = min(timeout, 0.002)
        elif self.ownership.main_watches_starts and any(
                not h.acked and not h.acks_late for h in self.running.values()):
            timeout = min(timeout, EARLY_ACK_AFTER)
        events = self.pool.collect(timeout, [self.waker])
        self.waker.drain()
        self.handle(events)
        if self.ownership.main_watches_starts and self.running:
            self.ack_started()

    def handle(self, events: list) -> None:
        for event in events:
            if isinstance(event, Finished):
                self.finished(event.result)
            elif isinstance(event, Lost):
                self.lost(event.job_id, event.exitcode)
            elif isinstance(event, TimedOut):
                self.timed_out(event.job_id, event.limit)
            elif isinstance(event, Settled):
                self.settled(event.job_ids)
            elif isinstance(event, Returned):
                self.returned(event.job_ids, event.ran)
            elif isinstance(event, Received):
                self.received(event.job_ids, event.fetched)
            elif isinstance(event, Began):
                self.began(event.job_ids)

    # -- remote control (see runner.control) ------------------------------------------------

    def call_soon(self, function: Callable[[], object]) -> Future:
        """Run ``function`` in the main loop (from the control thread); its result or error
        comes in the future."""
        future: Future = Future()
        self.calls.append((function, future))
        self.waker.wake()
        return future

    def run_calls(self) -> None:
        while self.calls:
            function, future = self.calls.popleft()
            try:
                future.set_result(function())
            except Exception as exc:  # noqa: BLE001 - the caller gets it as an error reply
                future.set_exception(exc)

    def remember_revoked(self, task_id: str) -> None:
        self.revoked_ids[task_id] = None
        if len(self.revoked_ids) > REVOKED_KEPT:
            del self.revoked_ids[next(iter(self.revoked_ids))]

    # -- writing ----------------------------------------------------------------------------

    def flush(self) -> None:
        """Hand results, outcomes and acks to the writer thread (see :mod:`writer`)."""
        results, self.results = self.results, []
        completed, self.completed = self.completed, []
        acks, self.acks = self.acks, []
        self.writer.submit(results, completed, acks)

    def flush_and_wait(self) -> None:
        self.flush()
        self.writer.drain()

    def write(self, results: list, completed: list, acks: list) -> None:
        """Runs in the writer thread (see :func:`writer.write`)."""
        write(self.app, self.broker, self.backend, results, completed, acks)

    # -- timers -----------------------------------------------------------------------------

    def next_timer(self) -> float:
        """When :meth:`housekeeping` next has something to do (monotonic)."""
        timers = [self.next_extend, self.next_cleanup]
        if self.running or self.buffer:
            timers.append(self.next_housekeeping)
        return min(timers)

    def housekeeping(self) -> None:
        now = time.monotonic()
        if now >= self.next_extend:
            self.next_extend = now + self.visibility_timeout / 3
            held = [h.delivery for h in self.buffer]
            held += [h.delivery for h in self.running.values() if not h.acked]
            with self.consumer.holding() as inbox:  # fetched, not yet taken
                held += inbox
            self.broker.extend(held)
        if now >= self.next_housekeeping and (self.running or self.buffer):
            self.next_housekeeping = now + HOUSEKEEPING_INTERVAL
            self.stop_revoked()
            if self.buffer:  # revoked after it was prefetched: it must not start
                buffered, self.buffer = self.buffer, []
                self.drop_revoked(buffered)
                self.consumer.set_hungry(not self.buffer)
        if self.autoscaler is not None and not self.stopping:
            self.autoscaler.look(now, len(self.buffer))
        if now >= self.next_cleanup:
            self.next_cleanup = now + CLEANUP_INTERVAL
            self.backend.cleanup()

    def stop_revoked(self) -> None:
        """Revoked tasks already handed to the pool: dropped if they still wait there to
        start, terminated if running and the revoke asked for it."""
        by_task = {h.message.id: job for job, h in self.running.items()}
        for task_id, (terminate, signame) in self.backend.revoked(list(by_task)).items():
            if not terminate:
                self.pool.drop_waiting(by_task[task_id])  # (if it has not started yet)
            elif task_id not in self.terminated:
                signum = getattr(signal, signame, signal.SIGTERM)
                if self.pool.terminate_job(by_task[task_id], signum):
                    self.terminated[task_id] = signum
                    logger.info("Terminating task %s (%s)", task_id, signame)
