"""A tasks module as a Celery user writes one with signal receivers (``-A signal_tasks``).

Each receiver appends one JSON line (signal name, pid, the kwargs worth checking) to the file
named by SIGNAL_LOG, for tests/test_signals.py to read. With SIGNAL_OWN_LOGGING set, a
``setup_logging`` receiver configures logging itself; with SIGNAL_RAISE set, receivers that
raise are connected too.
"""

import json
import logging
import os
import time

from runner import Celery
from runner.signals import (
    after_setup_logger,
    after_setup_task_logger,
    beat_init,
    import_modules,
    setup_logging,
    task_failure,
    task_postrun,
    task_prerun,
    task_received,
    task_rejected,
    task_retry,
    task_revoked,
    task_success,
    task_unknown,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

app = Celery("signal_tasks")


def record(signal, **fields):
    line = json.dumps({"signal": signal, "pid": os.getpid(), **fields}, default=repr)
    fd = os.open(os.environ["SIGNAL_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode() + b"\n")  # one write: lines of processes never mix
    finally:
        os.close(fd)


@app.task
def add(x, y):
    return x + y


@app.task
def echo(value):
    return value


@app.task
def boom(message="kaput"):
    raise ValueError(message)


@app.task(bind=True, max_retries=2, default_retry_delay=0.05)
def flaky(self, fail_times):
    if self.request.retries < fail_times:
        raise self.retry(exc=RuntimeError(f"attempt {self.request.retries}"))
    return self.request.retries


@app.task
def die():
    os._exit(3)


@app.task
def sleep(seconds):
    time.sleep(seconds)
    return seconds


# -- the worker's life ---------------------------------------------------------------------------

@import_modules.connect
def on_import_modules(sender=None, **kwargs):
    record("import_modules", app=sender.main)


@worker_init.connect
def on_worker_init(sender=None, **kwargs):
    record("worker_init", hostname=sender.hostname)


@worker_ready.connect
def on_worker_ready(sender=None, **kwargs):
    record("worker_ready", hostname=sender.hostname, app=sender.app.main)


@worker_process_init.connect
def on_worker_process_init(sender=None, **kwargs):
    record("worker_process_init", ppid=os.getppid())


@worker_process_shutdown.connect
def on_worker_process_shutdown(sender=None, pid=None, exitcode=None, **kwargs):
    record("worker_process_shutdown", sent_pid=pid, exitcode=exitcode)


@worker_shutdown.connect
def on_worker_shutdown(sender=None, **kwargs):
    record("worker_shutdown", hostname=sender.hostname)


@beat_init.connect
def on_beat_init(sender=None, **kwargs):
    record("beat_init", app=sender.app.main)


# -- tasks ---------------------------------------------------------------------------------------

@task_received.connect
def on_task_received(sender=None, request=None, **kwargs):
    record("task_received", id=request.id, name=request.name, args=request.args,
           hostname=sender.hostname, queue=request.delivery_info["routing_key"])


@task_prerun.connect
def on_task_prerun(sender=None, task_id=None, task=None, args=None, kwargs=None, **extra):
    record("task_prerun", id=task_id, name=task.name, sender=sender.name, args=args,
           kwargs=kwargs, request_id=task.request.id)


@task_postrun.connect
def on_task_postrun(sender=None, task_id=None, task=None, args=None, kwargs=None, retval=None,
                    state=None, **extra):
    record("task_postrun", id=task_id, name=task.name, retval=repr(retval), state=state)


@task_success.connect
def on_task_success(sender=None, result=None, **kwargs):
    record("task_success", name=sender.name, result=result, id=sender.request.id)


@task_failure.connect
def on_task_failure(sender=None, task_id=None, exception=None, args=None, kwargs=None,
                    traceback=None, einfo=None, **extra):
    record("task_failure", id=task_id, name=sender.name, exception=repr(exception), args=args,
           traceback=type(traceback).__name__, einfo_type=einfo.type.__name__,
           einfo_text="ValueError" in str(einfo) and "in boom" in str(einfo))


@task_retry.connect
def on_task_retry(sender=None, request=None, reason=None, einfo=None, **kwargs):
    record("task_retry", id=request.id, name=sender.name, retries=request.retries,
           reason=str(reason), einfo=type(einfo.exception).__name__)


@task_revoked.connect
def on_task_revoked(sender=None, request=None, terminated=None, signum=None, expired=None,
                    **kwargs):
    record("task_revoked", id=request.id, name=getattr(sender, "name", sender),
           terminated=terminated, signum=signum, expired=expired)


@task_unknown.connect
def on_task_unknown(sender=None, name=None, id=None, message=None, exc=None, **kwargs):  # noqa: A002
    record("task_unknown", name=name, id=id, exc=type(exc).__name__)


@task_rejected.connect
def on_task_rejected(sender=None, message=None, exc=None, **kwargs):
    record("task_rejected", exc=type(exc).__name__, body=message.body[:20].decode("latin-1"))


# -- filters: by task name, by task object, and one receiver connected twice under one uid ------

@task_success.connect(sender="signal_tasks.add")
def on_add_success_by_name(sender=None, result=None, **kwargs):
    record("add_success_by_name", result=result)


@task_success.connect(sender=add)
def on_add_success_by_task(sender=None, result=None, **kwargs):
    record("add_success_by_task", result=result)


def on_success_once(sender=None, result=None, **kwargs):
    record("success_once", name=sender.name)


task_success.connect(on_success_once, dispatch_uid="signal-tests-once")
task_success.connect(on_success_once, dispatch_uid="signal-tests-once")


# -- logging -------------------------------------------------------------------------------------

if os.environ.get("SIGNAL_OWN_LOGGING"):
    @setup_logging.connect
    def on_setup_logging(sender=None, loglevel=None, logfile=None, format=None, **kwargs):  # noqa: A002
        logging.basicConfig(level=loglevel, format="OWN %(levelname)s %(message)s")
        record("setup_logging", loglevel=loglevel, logfile=logfile)


@after_setup_logger.connect
def on_after_setup_logger(sender=None, logger=None, loglevel=None, **kwargs):
    record("after_setup_logger", logger=logger.name, loglevel=loglevel)


@after_setup_task_logger.connect
def on_after_setup_task_logger(sender=None, logger=None, loglevel=None, **kwargs):
    record("after_setup_task_logger", logger=logger.name, loglevel=loglevel)


# -- receivers that raise: the worker and the task go on -----------------------------------------

if os.environ.get("SIGNAL_RAISE"):
    @worker_ready.connect
    def broken_ready(**kwargs):
        raise RuntimeError("worker_ready receiver broke")

    @task_prerun.connect
    def broken_prerun(**kwargs):
        raise RuntimeError("task_prerun receiver broke")

    @task_success.connect
    def broken_success(**kwargs):
        raise RuntimeError("task_success receiver broke")

    @worker_process_init.connect
    def broken_process_init(**kwargs):
        raise RuntimeError("worker_process_init receiver broke")
