"""The worker's side of dead letters (see :mod:`runner.dead_letters`): sorting out, from each
fetched batch, the messages that must not run, and burying them.

A message is buried when it cannot be read, cannot run (the job's result is ``refused``), or
was delivered more than ``task_delivery_limit`` times without finishing. Burying is: store a
FAILURE result with the reason where the task id is known (so ``get()`` raises), keep the dead
letter in the broker, then ack the message, in that order: a worker killed in between buries it
again (same key), never loses it, and never runs it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runner import states
from runner.backends.base import ResultRecord
from runner.brokers.base import Broker, Delivery
from runner.dead_letters import DeadLetter
from runner.exceptions import DeliveryLimitExceeded
from runner.execute import Outcome, build_record
from runner.message import BadMessage, Message
from runner.signals import task_rejected
from runner.task import Request, Task
from runner.worker.consumer import Fetched
from runner.worker.counts import SharedCounts
from runner.worker.trace import (
    Job,
    JobResult,
    WorkerRef,
    acks_late_of,
    rejects_on_worker_lost,
    time_limit_of,
)
from runner.worker.writer import write, write_until_done

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner

logger = logging.getLogger("runner.worker")


@dataclass(slots=True)
class Burial:
    """A message to bury: its delivery (to ack), its dead letter, and the FAILURE to store."""

    delivery: Delivery
    letter: DeadLetter
    record: ResultRecord | None
    message: Message | None = None  # readable: the middleware sees its FAILURE (chains, runs)


def sort_out(app: Runner, fetched: list[Fetched], hostname: str
             ) -> tuple[list[Fetched], list[Burial]]:
    """Split a fetched batch into what may run and what must be buried: unreadable messages,
    and those delivered more than ``task_delivery_limit`` times."""
    limit = app.conf.task_delivery_limit
    keep: list[Fetched] = []
    burials: list[Burial] = []
    for item in fetched:
        message = item.message
        if message is None:
            if task_rejected.receivers:  # (message: the delivery, its body as received)
                task_rejected.send(sender=WorkerRef(app, hostname), message=item.delivery,
                                   exc=item.exception or BadMessage(item.error or "unreadable"))
            burials.append(unreadable(app, item, hostname))
            continue
        count = item.delivery.deliveries or _counted(app, message)
        if limit and count > limit:
            reason: Exception = DeliveryLimitExceeded(
                f"delivered {count} times without finishing (task_delivery_limit={limit}): "
                f"its task kills or stalls the process that runs it")
            burials.append(burial(app, item.delivery, message, reason, hostname, count))
            continue
        task = app.tasks.get(message.task)
        if task is not None and type(task).effective is not Task.effective:
            try:  # what the worker looks up before the task runs: a Task class's own code
                acks_late_of(app, message), rejects_on_worker_lost(app, message)
                time_limit_of(app, message)
            except Exception as exc:  # noqa: BLE001 - one message must never stop a worker
                logger.exception("Task %s[%s]: looking up its options failed", message.task,
                                 message.id)
                burials.append(burial(app, item.delivery, message, exc, hostname))
                continue
        keep.append(item)
    return keep, burials


#: counts of this worker's processes, where nothing else counts (see runner.worker.counts)
shared_counts = SharedCounts()


def _counted(app: Runner, message: Message) -> int:
    """The delivery count of a redelivered message whose broker does not count (RabbitMQ's
    classic queues), kept in the result backend; where that keeps nothing (``rpc://``), in
    memory this worker's processes share."""
    backend = app.backend
    if not backend.keeps_state or backend.process_local:
        return shared_counts.bump(message.id)
    key = f"deliveries:{message.id}"
    try:
        raw = backend.update_data(key, lambda old: str(int(old or 1) + 1).encode())
        return int(raw or 2)
    except Exception as exc:  # noqa: BLE001 - the backend failed: run it (at least once)
        logger.error("counting the deliveries of task %s[%s] failed: %s", message.task,
                     message.id, exc)
        return 2


def unreadable(app: Runner, item: Fetched, hostname: str) -> Burial:
    """The burial of a message whose envelope could not be read; where its id could still be
    read (a wrong field beside it), a FAILURE is stored under that id."""
    delivery, error = item.delivery, item.error or "unreadable"
    task_id = getattr(item.exception, "task_id", None)
    task = getattr(item.exception, "task", None)
    letter = DeadLetter.of(delivery.body, error, delivery.queue,
                           deliveries=delivery.deliveries or 1, task_id=task_id, task=task,
                           hostname=hostname)
    record = None
    if task_id is not None:
        record = failure(app, task_id, task or "", BadMessage(error), hostname,
                         getattr(item.exception, "reply_to", None))
    return Burial(delivery, letter, record)


def burial(app: Runner, delivery: Delivery, message: Message, reason: BaseException,
           hostname: str, count: int | None = None) -> Burial:
    """The burial of a readable message that cannot (or must no longer) run."""
    letter = DeadLetter.of(message.encode(), f"{type(reason).__name__}: {reason}",
                           delivery.queue, deliveries=count or delivery.deliveries or 1,
                           task_id=message.id, task=message.task, hostname=hostname)
    return Burial(delivery, letter, failure(app, message.id, message.task, reason, hostname,
                                            message.reply_to), message)


def bury_refused(app: Runner, broker: Broker, job: Job, result: JobResult,
                 hostname: str) -> None:
    """Keep the dead letter of a job that was refused (unknown task, content not accepted, a
    payload that is not ``[args, kwargs]``); its FAILURE is stored and its message acked
    with the job's result, after this, unless its id is a finished task's (then the FAILURE
    is dropped: ``result.record`` is cleared)."""
    assert job.delivery is not None
    letter = DeadLetter.of(job.message.encode(), result.summary, job.delivery.queue,
                           deliveries=job.delivery.deliveries or 1, task_id=job.message.id,
                           task=job.message.task, hostname=hostname)
    logger.error("Dead letter %s from queue %s: %s", letter.key, letter.queue, letter.reason)
    write_until_done(lambda: broker.bury([letter]), 0, 0)
    if _finished(app, [job.message.id]):
        result.record = None


def failure(app: Runner, task_id: str, task: str, reason: BaseException, hostname: str,
            reply_to: str | None = None) -> ResultRecord:
    request = Request(id=task_id, task=task, hostname=hostname)
    record = build_record(task, request, Outcome(states.FAILURE, reason, None),
                          app.conf.result_serializer)
    record.reply_to = reply_to
    return record


def log(burials: Sequence[Burial]) -> None:
    for item in burials:
        letter = item.letter
        logger.error("Dead letter %s from queue %s (delivery %d): %s", letter.key, letter.queue,
                     letter.deliveries, letter.reason)


def bury(app: Runner, broker: Broker, burials: Sequence[Burial], ack: bool = True) -> None:
    """Keep the dead letters, then store the FAILURE results, run the middleware on them (a
    chain's later steps, a pipeline's run learn of the failure) and (``ack``) ack the
    messages; retried until done, as every write of a worker."""
    if not burials:
        return
    log(burials)
    finished = _finished(app, [b.record.task_id for b in burials if b.record is not None])
    kept = [b for b in burials if b.record is not None and b.record.task_id not in finished]
    records = [b.record for b in kept if b.record is not None]
    completed = [(b.message, states.FAILURE, b.record) for b in kept if b.message is not None]
    acks = [b.delivery for b in burials] if ack else []

    def write_all() -> None:
        broker.bury([b.letter for b in burials])
        write(app, broker, app.backend, records, completed, acks)
    write_until_done(write_all, len(records), len(acks))


def _finished(app: Runner, task_ids: list[str]) -> set[str]:
    """Which of ``task_ids`` already have a final result: a bad message that carries the id
    of a finished task (a forged or duplicated one) does not overwrite that result."""
    if not task_ids:
        return set()
    try:
        found = app.backend.get_many(task_ids)
    except Exception as exc:  # noqa: BLE001 - the backend failed: store the FAILUREs
        logger.error("looking up results before burying failed: %s", exc)
        return set()
    return {task_id for task_id, record in found.items() if record.ready}
