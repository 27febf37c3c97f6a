"""Celery's ``celery.contrib.testing`` for runner: a real worker of an app, in a thread of the
test's own process, started and stopped around a block of test code.

    from runner.contrib.testing import start_worker

    with start_worker(app):
        assert add.delay(2, 2).get(timeout=10) == 4

The worker is runner's own (consumer, pool, result writer): what a test sees is what a worker
process does, minus the process. Its pool is ``solo`` (the worker's thread runs the tasks), ``threads``, or
``asyncio`` (``async def`` tasks, ``concurrency`` at once on an event loop in a thread of the
test's process, as ``-P asyncio --processes 0``); a prefork pool would fork the test process
from a thread, so it is refused.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner
    from runner.worker.worker import Worker

PING_TASK = "celery.ping"


def ping() -> str:
    """The task a started worker is pinged with, as Celery's ``celery.ping``."""
    return "pong"


@contextlib.contextmanager
def start_worker(app: Runner, concurrency: int = 1, pool: str = "solo",
                 loglevel: str | int | None = None, perform_ping_check: bool = True,
                 ping_task_timeout: float = 10.0, shutdown_timeout: float = 10.0,
                 queues: list[str] | None = None, **_celery_only: Any) -> Iterator[Worker]:
    """Run a worker of ``app`` in a thread while the block runs; stop it (warm) after.

    With ``perform_ping_check`` (the default, as Celery's) the block starts once the worker
    has run a ping task; ``loglevel`` and Celery's other keyword arguments are accepted."""
    from runner.worker.held import WorkerOptions
    from runner.worker.worker import Worker

    if pool not in ("solo", "threads", "asyncio"):
        raise ValueError(f"start_worker(pool={pool!r}): use 'solo', 'threads' or 'asyncio' (a "
                         f"prefork pool would fork the test process from a thread)")
    if perform_ping_check and PING_TASK not in app.tasks:
        app.task(name=PING_TASK)(ping)
    app.import_task_modules()
    conf = app.conf
    options = WorkerOptions(
        concurrency=concurrency, pool=pool,
        queues=queues or ([q.name for q in conf.task_queues] if conf.task_queues
                          else [conf.task_default_queue]),
        hostname=f"gen{os.getpid()}@{socket.gethostname()}",
        prefetch_multiplier=conf.worker_prefetch_multiplier,
        processes=0)  # (asyncio: its loop in this process; no fork)
    worker = Worker(app, options)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(install_signals=False)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"runner-test-worker-{options.hostname}",
                              daemon=True)
    thread.start()
    try:
        if perform_ping_check:
            result = app.send_task(PING_TASK)
            if result.get(timeout=ping_task_timeout) != "pong":
                raise RuntimeError("the test worker did not answer its ping")
        yield worker
    finally:
        worker.stop()
        thread.join(shutdown_timeout)
        if thread.is_alive():
            raise RuntimeError(f"the test worker did not stop within {shutdown_timeout}s "
                               f"(a task still running?)")
        if failure:
            raise failure[0]
