"""The tasks the end-to-end tests run in real worker processes (imported as ``-A tasks``).

Broker and backend come from RUNNER_BROKER_URL / RUNNER_RESULT_BACKEND, set per test.
"""

import asyncio
import os
import signal
import time

from runner import Celery
from runner.exceptions import SoftTimeLimitExceeded
from runner.middleware import Middleware
from runner.serialization import loads

app = Celery("tasks")


@app.task
def add(x, y):
    return x + y


@app.task
def echo(value):
    return value


@app.task
def boom(message="kaput"):
    raise ValueError(message)


class CustomError(Exception):
    pass


@app.task
def custom_boom():
    raise CustomError("custom", 42)


@app.task
def sleep(seconds, value=None):
    time.sleep(seconds)
    return value


@app.task(bind=True)
def whoami(self):
    r = self.request
    return {"id": r.id, "retries": r.retries, "args": r.args, "kwargs": r.kwargs,
            "hostname": r.hostname, "queue": r.delivery_info.get("queue"), "pid": os.getpid()}


@app.task(bind=True, max_retries=3, default_retry_delay=0.1)
def flaky(self, fail_times):
    if self.request.retries < fail_times:
        raise self.retry(exc=RuntimeError(f"attempt {self.request.retries}"))
    return self.request.retries


@app.task(autoretry_for=(ZeroDivisionError,), retry_backoff=0.1, retry_jitter=False,
          max_retries=2)
def divide(x, y):
    return x / y


@app.task(soft_time_limit=0.5)
def soft_limited(seconds):
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "finished"


@app.task(time_limit=0.5)
def hard_limited(seconds):
    time.sleep(seconds)
    return "finished"


@app.task(time_limit=0.5)
def spin_hard_limited(seconds):
    """Busy (no blocking call) for ``seconds``: a limit injected into its thread stops it."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return "finished"


@app.task(time_limit=0.5)
async def async_hard_limited(seconds):
    await asyncio.sleep(seconds)
    return "finished"


@app.task
def die(code=1, ballast=None):
    os._exit(code)


@app.task
def pid():
    return os.getpid()


@app.task(acks_late=True)
def slow_late(seconds, marker=None):
    """Appends to ``marker`` (a file) when it starts, so a test can count runs."""
    if marker:
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return "done"


@app.task(acks_late=True, reject_on_worker_lost=True)
def die_late(marker):
    """Dies the first time it runs, succeeds the second time."""
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write("1")
        os._exit(9)
    return "second run"


def _mark(marker, text):
    """Append one line to ``marker`` (O_APPEND: lines of concurrent writers never mix)."""
    with open(marker, "a") as f:
        f.write(f"{text}\n")


@app.task
def sleep_marked(seconds, marker):
    """Writes its pid to ``marker`` when it starts, so a test can find (and kill) it."""
    _mark(marker, os.getpid())
    time.sleep(seconds)
    return "done"


@app.task
def stored_then_killed(marker, kill_after=1):
    """Marks each run; :class:`KillAfterStore` kills its process once its result is stored."""
    _mark(marker, "ran")
    return "done"


class KillAfterStore(Middleware):
    """Kills the process that stored ``stored_then_killed``'s result, once, when ``marker``
    shows ``kill_after`` runs: it dies after the store and before it told its worker (or
    acked)."""

    def wants(self, message):
        return message.task == "tasks.stored_then_killed"

    def after_task_stored(self, app, message, state, record):
        args = loads(message.payload, message.content_type)[0]
        marker, kill_after = args[0], (args[1] if len(args) > 1 else 1)
        _mark(marker, "hook")
        with open(marker) as f:
            runs = f.read().split().count("ran")
        if runs >= kill_after and not os.path.exists(marker + ".killed"):
            open(marker + ".killed", "w").close()
            os.kill(os.getpid(), signal.SIGKILL)


app.middleware.append(KillAfterStore())


@app.task
def segfault():
    import ctypes

    ctypes.string_at(0)


@app.task
def record(i, marker):
    """Counts its runs in ``marker``; returns ``2 * i``."""
    _mark(marker, i)
    return 2 * i


@app.task(autoretry_for=(ZeroDivisionError,), retry_backoff=0.2, retry_jitter=False,
          max_retries=3)
def backoff_fail(marker):
    _mark(marker, time.time())
    return 1 / 0


@app.task(autoretry_for=(ZeroDivisionError,), retry_backoff=0.4, retry_jitter=True,
          max_retries=3)
def jitter_fail(marker):
    _mark(marker, time.time())
    return 1 / 0


# -- calling API tests (tests/test_calling.py, test_results.py, test_serializers_e2e.py, ...) --


def _append_line(path, text):
    with open(path, "a") as f:
        f.write(f"{text}\n")


@app.task
def log_label(path, label):
    """Appends ``label`` to ``path``, so a test can read the order in which tasks ran."""
    _append_line(path, label)
    return label


@app.task(bind=True)
def request_info(self, *args, **kwargs):
    r = self.request
    return {"id": r.id, "args": r.args, "kwargs": r.kwargs, "headers": r.headers,
            "delivery_info": r.delivery_info, "is_eager": r.is_eager, "hostname": r.hostname,
            "retries": r.retries}


@app.task(bind=True, max_retries=1)
def retry_once(self, countdown):
    if self.request.retries == 0:
        raise self.retry(exc=KeyError("first try"), countdown=countdown)
    return f"second try of {self.request.id}"


@app.task(autoretry_for=(ZeroDivisionError,), retry_backoff=5, retry_backoff_max=0.2,
          retry_jitter=False, max_retries=2)
def capped_backoff_fail():
    return 1 / 0


@app.task(name="calling.renamed")
def renamed(x):
    return f"renamed {x}"


@app.task(bind=True, queue="media")
def on_media_queue(self):
    return self.request.delivery_info.get("queue")


@app.task(ignore_result=True)
def fire_and_forget(path):
    _append_line(path, "ran")


@app.task(serializer="pickle")
def pickled_echo(value):
    return value


@app.task
def unserializable_result():
    return object()


@app.task
def worker_only_error():
    """Raises an exception whose class the caller cannot import."""
    raise type("WorkerOnlyError", (Exception,), {"__module__": "worker_only_errors"})("only here")


@app.task(soft_time_limit=0.5)
def spin(seconds):
    """Busy for ``seconds`` (no blocking call): how a soft limit reaches a pool thread."""
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            pass
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "finished"


@app.task(acks_late=True)
def slow_once(marker, seconds=30):
    """Sleeps ``seconds`` on its first run (a test then stops its worker), returns at once on
    later runs; each run adds a line to ``marker``."""
    first = not os.path.exists(marker)
    _mark(marker, os.getpid())
    if first:
        time.sleep(seconds)
        return "first run"
    return "second run"


@app.task(bind=True, max_retries=1)
def retry_with_new_args(self, n):
    if self.request.retries == 0:
        raise self.retry(args=[n + 1], countdown=0)
    return n


@app.task(bind=True, max_retries=None, default_retry_delay=0)
def retry_forever(self, times):
    """max_retries=None: retries as often as it asks, past task_max_retries (3)."""
    if self.request.retries < times:
        raise self.retry(exc=RuntimeError("again"))
    return self.request.retries


@app.task
def nap(seconds):
    """Sleeps in short naps, as I/O-bound code does: a limit reaches a pool thread at once."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.01)
    return "rested"


# -- canvas tests (tests/test_canvas.py) ------------------------------------------------------


@app.task
def tsum(values, marker=None):
    """The sum of ``values`` (a chord's header results); each run adds a line to ``marker``."""
    if marker:
        _mark(marker, "body")
    return sum(values)


@app.task
def pair(first, second):
    """Shows the order of its arguments (a partial signature's args come last)."""
    return [first, second]


@app.task
def note_failure(task_id, marker):
    """An errback: writes the failed task's id to ``marker``."""
    _mark(marker, task_id)
    return task_id


# -- bad input (tests/test_bad_messages.py) ----------------------------------------------------


@app.task(acks_late=True, reject_on_worker_lost=True)
def die_every_time(marker):
    """Kills its process on every run (a poison task); each run adds a line to ``marker``."""
    _mark(marker, os.getpid())
    os._exit(0)


class _OptionsThatRaise(type(add)):
    """A Task class whose option lookup fails for one option: a bug in user code the worker
    meets while it handles a message, before the task runs."""

    def effective(self, option):
        if option == "acks_late":
            raise RuntimeError("this task's acks_late cannot be read")
        return super().effective(option)


@app.task(base=_OptionsThatRaise)
def broken_options():
    return "never"
