"""``async def`` tasks on the test app of ``tasks.py`` (``-A async_tasks`` runs both).

With ASYNC_SIGNAL_LOG set (in a worker), task_prerun / task_postrun append a line
"signal task-name task-id" to that file.
"""

import asyncio
import os
import threading
import time
from pathlib import Path

from tasks import app  # noqa: F401 - the worker finds the app here

from runner.exceptions import SoftTimeLimitExceeded
from runner.signals import task_postrun, task_prerun

_in_flight = 0
_most = 0


@app.task
async def aadd(x, y, delay=0.0):
    await asyncio.sleep(delay)
    return x + y


@app.task(bind=True)
async def aown_id(self, delay=0.0):
    """Its own request id, read after an await (other jobs ran on the loop meanwhile)."""
    await asyncio.sleep(delay)
    return self.request.id


@app.task
async def afail(text):
    await asyncio.sleep(0)
    raise ValueError(text)


@app.task(bind=True, max_retries=3)
async def aflaky(self, marker, succeed_on):
    """Fails (retrying) until its attempt number ``succeed_on``; each attempt adds a line."""
    with open(marker, "a") as f:
        f.write(f"{self.request.retries}\n")
    await asyncio.sleep(0)
    if self.request.retries < succeed_on:
        raise self.retry(countdown=0, exc=RuntimeError("not yet"))
    return self.request.retries


@app.task
async def ainflight(delay):
    """How many of these ran at once on this loop (at most), seen by this one."""
    global _in_flight, _most
    _in_flight += 1
    _most = max(_most, _in_flight)
    try:
        await asyncio.sleep(delay)
        return _most
    finally:
        _in_flight -= 1


@app.task(soft_time_limit=0.3)
async def asoft(marker):
    try:
        await asyncio.sleep(10)
    except SoftTimeLimitExceeded:
        Path(marker).write_text("cleaned up")
        return "stopped in time"
    return "slept"


@app.task(time_limit=0.5)
async def ahard(marker):
    try:
        await asyncio.sleep(10)
    finally:
        Path(marker).write_text("cancelled")


@app.task
async def along(marker, seconds):
    Path(marker).write_text("started")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        Path(marker).write_text("cancelled")
        raise
    return "done"


@app.task
def block(marker, seconds):
    """A plain def task that blocks its thread (in the asyncio pool: not the loop)."""
    Path(marker).write_text("started")
    time.sleep(seconds)
    return threading.current_thread().name


if os.environ.get("ASYNC_SIGNAL_LOG"):
    def _record(signal_name, task_id=None, task=None, **kwargs):
        with open(os.environ["ASYNC_SIGNAL_LOG"], "a") as f:
            f.write(f"{signal_name} {task.name} {task_id}\n")

    task_prerun.connect(lambda sender=None, **kw: _record("prerun", **kw), weak=False)
    task_postrun.connect(lambda sender=None, **kw: _record("postrun", **kw), weak=False)


@app.task
async def ablocking(seconds):
    """Blocks the loop it runs on (a mistake the asyncio pool reports)."""
    time.sleep(seconds)
    return "woke"


@app.task(bind=True, acks_late=True)
async def aprogress(self, steps):
    """Reports its progress with update_state (step 0), then aupdate_state; acked after it
    ran."""
    for step in range(steps):
        if step:
            await self.aupdate_state(state="PROGRESS", meta={"step": step})
        else:
            self.update_state(state="PROGRESS", meta={"step": step})
        await asyncio.sleep(0.2)
    return steps


@app.task
async def apid(delay=0.0):
    """The pid of the process that ran it, and how many of these ran at once there."""
    global _in_flight, _most
    _in_flight += 1
    _most = max(_most, _in_flight)
    try:
        await asyncio.sleep(delay)
        return [os.getpid(), _most]
    finally:
        _in_flight -= 1


async def _swallow(marker, seconds):
    """Sleeps ``seconds`` and will not be cancelled (a mistake: swallows CancelledError)."""
    Path(marker).write_text("started")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            await asyncio.sleep(deadline - time.monotonic())
        except asyncio.CancelledError:
            Path(marker).write_text("cancel swallowed")
    return "not stopped"


@app.task(time_limit=0.5)
async def aswallow_limited(marker, seconds):
    return await _swallow(marker, seconds)


@app.task
async def aswallow(marker, seconds):
    return await _swallow(marker, seconds)


@app.task(time_limit=0.5)
async def ablocking_limited(seconds):
    """Blocks its loop past its hard time limit: cancelling cannot reach it."""
    time.sleep(seconds)
    return "woke"


@app.task(bind=True, acks_late=True)
async def alate(self, marker, seconds):
    """Acked after it ran; appends its attempt to ``marker`` as it starts."""
    with open(marker, "a") as f:
        f.write(f"{os.getpid()}\n")
    await asyncio.sleep(seconds)
    return "done"


@app.task(acks_late=True, reject_on_worker_lost=True)
async def aredeliver(marker, seconds):
    """Delivered again if its process dies (acks_late and reject_on_worker_lost)."""
    with open(marker, "a") as f:
        f.write("attempt\n")
    await asyncio.sleep(seconds)
    return "done"
