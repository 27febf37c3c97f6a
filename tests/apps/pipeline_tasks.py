"""Tasks the pipeline tests run in real worker processes (``-A pipeline_tasks``).

Tasks append a line to ``marks.log`` in the worker's working directory (the test's tmp_path)
each time they run, so a test can count executions across processes.
"""

import os
import time
from pathlib import Path

from runner import Celery
from runner.exceptions import SoftTimeLimitExceeded

app = Celery("pipeline_tasks", set_as_current=False)  # the tests' `tasks` app stays current

MARKS = "marks.log"


def mark(text) -> None:
    """One line per call; O_APPEND keeps the lines of concurrent processes whole."""
    with open(MARKS, "a") as f:
        f.write(f"{text}\n")


def marks() -> list[str]:
    return Path(MARKS).read_text().splitlines() if os.path.exists(MARKS) else []


@app.task
def echo(value, label="echo"):
    mark(label)
    return value


@app.task
def describe(*args, **kwargs):
    """The type and value of each argument, as the task received it."""
    return {"args": [[type(a).__name__, a] for a in args],
            "kwargs": {k: [type(v).__name__, v] for k, v in kwargs.items()}}


@app.task
def double(i, label="item"):
    mark(f"{label}:{i}")
    return 2 * i


@app.task
def collect(values, label="fanin"):
    """A fan-in: receives the results of the steps it needs."""
    mark(label)
    return values


@app.task
def fail(message="kaput"):
    mark("fail")
    raise ValueError(message)


@app.task
def broken_while_flagged(label):
    """Fails while the file ``broken-<label>`` exists in the working directory."""
    mark(label)
    if os.path.exists(f"broken-{label}"):
        raise RuntimeError(f"{label} is broken")
    return label


@app.task
def fail_times(label, times):
    """Fails the first ``times`` runs (counted in marks.log), then returns the run count."""
    before = marks().count(label)
    mark(label)
    if before < times:
        raise RuntimeError(f"{label} attempt {before + 1} fails")
    return before + 1


@app.task(bind=True)
def request_info(self):
    r = self.request
    return {"queue": r.delivery_info.get("queue"), "priority": r.delivery_info.get("priority"),
            "time_limit": r.time_limit, "soft_time_limit": r.soft_time_limit,
            "retries": r.retries}


@app.task
def sleep(seconds, label="sleep"):
    mark(f"start:{label}")
    time.sleep(seconds)
    mark(f"end:{label}")
    return label


@app.task
def sleep_until_soft_limit(seconds):
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "soft limit"
    return "slept"


@app.task
def stamp(label):
    """When it started (epoch seconds): rate-limit tests compare the starts of tasks."""
    mark(label)
    return time.time()


@app.task(rate_limit="5/s", rate_limit_scope="global")
def stamp_limited(label):
    """``stamp`` with a rate limit every worker shares."""
    mark(label)
    return time.time()
