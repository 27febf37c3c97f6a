"""Tasks of the canvas tests (``tests/test_canvas_*.py``), on the app of ``tasks.py``: a worker
started with ``-A canvas_tasks`` knows both."""

import os
import time

from tasks import _mark, add, app, boom, tsum

from runner import chain, chord, group
from runner.result import allow_join_result


@app.task
def note_error(request, exc, traceback, marker):
    """A Celery-style errback: called in the worker with the failed task's request."""
    _mark(marker, f"{request.id}|{type(exc).__name__}|{bool(traceback)}")


@app.task
def note_id(task_id, marker):
    """An old-style errback: sent as a task with the failed task's id."""
    _mark(marker, f"{task_id}|id")


@app.task
def mul(x, y):
    return x * y


@app.task
def xsum(values):
    return sum(values)


@app.task(bind=True)
def replaced_by(self, kind, value):
    """Replaces itself with a task, a chain, a group or a chord."""
    if kind == "task":
        return self.replace(add.s(value, 1))
    if kind == "chain":
        return self.replace(add.s(value, 1) | mul.s(10))
    if kind == "group":
        return self.replace(group(add.s(value, i) for i in range(3)))
    if kind == "chord":
        return self.replace(chord([add.s(value, i) for i in range(3)], tsum.s()))
    if kind == "boom":
        return self.replace(boom.si("replacement broke"))
    return value


@app.task(bind=True)
def spawn(self, n):
    """Sends ``n`` tasks: they are its children."""
    for i in range(n):
        add.delay(i, i)
    return n


@app.task
def joins_inside(x, allowed):
    """Waits for another task inside a task: refused unless inside allow_join_result."""
    result = add.apply_async((x, x), queue="inner")  # (a worker of its own: no deadlock)
    if allowed:
        with allow_join_result():
            return result.get(timeout=10)
    return result.get(timeout=10)


@app.task(acks_late=True)
def slow_part(i, marker, seconds=1.0):
    """A header part that takes a while (and counts its runs)."""
    _mark(marker, f"part{i}")
    time.sleep(seconds)
    return i


@app.task(acks_late=True)
def counted_sum(values, marker):
    """A chord body that counts its runs."""
    _mark(marker, f"body{os.getpid()}")
    return sum(values)


@app.task(bind=True)
def stamps_of(self, value=None):
    """The stamps this task got."""
    headers = self.request.headers or {}
    return {k: headers.get(k) for k in headers.get("stamped_headers") or ()}


__all__ = ["chain"]


@app.task
def note_run(marker, value):
    """Counts its runs in ``marker``."""
    _mark(marker, "ran")
    return value


@app.task(bind=True, acks_late=True, reject_on_worker_lost=True)
def replace_then_die(self, marker, ran):
    """Replaces itself, then (on its first run) dies before its message is acked."""
    from runner.exceptions import Ignore

    _mark(marker, "started")
    try:
        self.replace(note_run.si(ran, 5))
    except Ignore:
        if len(open(marker).read().split()) == 1:
            os._exit(1)
        raise


@app.task
def note_args(*args, marker):
    """An errback taking anything: writes how many arguments it got."""
    _mark(marker, len(args))
