"""Tasks written as a Celery project writes them (tests/test_celery_api.py): shared_task,
update_state, a Task base class with handlers, a class-based task, current_task."""

from __future__ import annotations

import json
import os
import time

from runner import Celery, Task, current_task, shared_task
from runner.utils.log import get_task_logger

app = Celery("celery_api_tasks")
logger = get_task_logger(__name__)


def note(event: str, **data) -> None:
    """One JSON line per event in the file named by $API_NOTES (O_APPEND: no mixing)."""
    with open(os.environ["API_NOTES"], "a") as f:
        f.write(json.dumps({"event": event, "pid": os.getpid(), **data}, default=str) + "\n")


class Audited(Task):
    """A base class as error trackers and DB-connection code write them."""

    def before_start(self, task_id, args, kwargs):
        note("before_start", task_id=task_id, args=args)

    def on_success(self, retval, task_id, args, kwargs):
        note("on_success", task_id=task_id, retval=retval)

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        note("on_failure", task_id=task_id, exc=repr(exc), tb="ZeroDivisionError" in
             einfo.traceback, type=einfo.type.__name__)

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        note("after_return", task_id=task_id, status=status)


@app.task(base=Audited)
def divide(x, y):
    return x / y


@shared_task(bind=True)
def progress(self, steps, gate):
    """Reports PROGRESS each step; waits for the file ``gate`` before the last one."""
    for i in range(steps):
        self.update_state(state="PROGRESS", meta={"current": i, "total": steps})
        if i == steps - 1:
            while not os.path.exists(gate):
                time.sleep(0.01)
    return {"current": steps, "total": steps}


@shared_task
def who_runs(*args, **kwargs):
    request = current_task.request
    return {"name": current_task.name, "id": request.id, "correlation_id": request.correlation_id,
            "hostname": request.hostname, "is_eager": request.is_eager,
            "called_directly": request.called_directly, "args": request.args,
            "kwargs": request.kwargs, "retries": request.retries, "eta": request.eta,
            "expires": request.expires, "root_id": request.root_id,
            "parent_id": request.parent_id, "group": request.group, "chord": request.chord,
            "delivery_info": request.delivery_info}


class Multiply(app.Task):
    name = "celery_api_tasks.multiply"

    def run(self, x, y):
        return x * y


multiply = app.register_task(Multiply())


@app.task(bind=True)
def bad_state(self, kind):
    if kind == "state":
        self.update_state(state=None, meta={})
    self.update_state(state="PROGRESS", meta={"handle": object()})


@app.task
def chatty(word):
    logger.warning("saying %s", word)
    return word
