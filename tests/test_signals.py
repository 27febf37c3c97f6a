"""Signals, as a Celery user connects them: receivers in the tasks module of a real worker
(tests/apps/signal_tasks.py) record what they got to a file; each signal fires once per event,
in the process Celery fires it in, with Celery's keyword arguments. Receivers that raise never
stop the worker or the task. The Signal class itself (sender filters, weak references,
dispatch_uid, signature checks) and the publish signals are tested in this process."""

from __future__ import annotations

import gc
import json
import logging
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runner import Celery, signals
from runner.signals import InvalidReceiver, Signal
from tests.helpers import wait_for_state

pytestmark = pytest.mark.transports("sqlite", "redis")

APP = "signal_tasks"


@pytest.fixture
def client(db_url: str, broker_url: str):
    """A caller's app on the test's broker; it sends by name, so the receivers of
    signal_tasks are connected only in the worker's processes, never in pytest's."""
    app = Celery("signal-tests-client", broker=broker_url, backend=db_url, set_as_current=False)
    yield app
    app.close()


@pytest.fixture
def signal_log(tmp_path: Path) -> Path:
    return tmp_path / "signals.jsonl"


def read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(path: Path, name: str, count: int = 1, timeout: float = 15.0) -> list[dict]:
    """The records of signal ``name``, once there are ``count`` of them."""
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in read(path) if r["signal"] == name]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(found)} {name} record(s), not {count}, after "
                                 f"{timeout}s: {read(path)}")
        time.sleep(0.02)


def of(records: list[dict], name: str, **match) -> list[dict]:
    return [r for r in records if r["signal"] == name
            and all(r.get(k) == v for k, v in match.items())]


def start(start_worker, signal_log: Path, *args: str, **env: str):
    return start_worker(*args, app=APP, env={"SIGNAL_LOG": str(signal_log), **env})


# -- a real worker ------------------------------------------------------------------------------


@pytest.mark.transports("sqlite", "redis", "amqp")
def test_worker_and_task_signals_fire_once_each_in_the_right_process(client, start_worker,
                                                                      signal_log):
    worker = start(start_worker, signal_log, "-c", "2")
    main = worker.pid
    add = client.send_task("signal_tasks.add", (2, 3))
    boom = client.send_task("signal_tasks.boom", ("bad",))
    flaky = client.send_task("signal_tasks.flaky", (1,))
    echo = client.send_task("signal_tasks.echo", ("x",))
    assert add.get(timeout=20) == 5 and echo.get(timeout=20) == "x"
    assert flaky.get(timeout=20) == 1
    with pytest.raises(ValueError, match="bad"):
        boom.get(timeout=20)
    wait_for(signal_log, "task_postrun", 5)  # (the result is stored before postrun is sent)
    assert worker.stop() == 0
    records = read(signal_log)

    # the worker's main process
    for name in ("import_modules", "worker_init", "worker_ready", "worker_shutdown",
                 "after_setup_logger", "after_setup_task_logger"):
        assert [r["pid"] for r in of(records, name)] == [main], name
    assert of(records, "import_modules")[0]["app"] == "signal_tasks"
    assert of(records, "worker_ready")[0]["app"] == "signal_tasks"
    [after_setup] = of(records, "after_setup_logger")
    assert after_setup["logger"] == "root" and after_setup["loglevel"] == logging.INFO
    assert of(records, "after_setup_task_logger")[0]["logger"] == "runner.task"
    order = [r["signal"] for r in records]
    assert order.index("worker_init") < order.index("worker_process_init") < order.index(
        "task_prerun")
    assert order.index("worker_ready") < order.index("task_prerun")
    assert order[-1] == "worker_shutdown"

    # each pool child, once as it starts and once as it ends
    children = [r["pid"] for r in of(records, "worker_process_init")]
    assert len(children) == 2 == len(set(children)) and main not in children
    assert all(r["ppid"] == main for r in of(records, "worker_process_init"))
    shutdowns = of(records, "worker_process_shutdown")
    assert sorted(r["pid"] for r in shutdowns) == sorted(children)
    assert all(r["sent_pid"] == r["pid"] and r["exitcode"] == 0 for r in shutdowns)

    # task signals: in the child that ran the task, once per event
    task_records = [r for r in records if r["signal"].startswith("task_")]
    assert task_records and all(r["pid"] in children for r in task_records)
    received = Counter(r["id"] for r in of(records, "task_received"))
    assert received == {add.id: 1, boom.id: 1, echo.id: 1, flaky.id: 2}  # (a retry is sent again)
    [add_received] = of(records, "task_received", id=add.id)
    assert add_received["name"] == "signal_tasks.add" and add_received["args"] == [2, 3]
    assert add_received["queue"] == "celery" and add_received["hostname"].startswith("celery@")
    prerun = of(records, "task_prerun", id=add.id)
    assert len(prerun) == 1
    assert prerun[0] | {"pid": 0} == {
        "signal": "task_prerun", "pid": 0, "id": add.id, "name": "signal_tasks.add",
        "sender": "signal_tasks.add", "args": [2, 3], "kwargs": {}, "request_id": add.id}
    assert [(r["state"], r["retval"]) for r in of(records, "task_postrun", id=add.id)] == [
        ("SUCCESS", "5")]
    assert [r["state"] for r in of(records, "task_postrun", id=flaky.id)] == ["RETRY",
                                                                              "SUCCESS"]
    assert [r["state"] for r in of(records, "task_postrun", id=boom.id)] == ["FAILURE"]
    successes = of(records, "task_success")
    assert sorted((r["id"], r["result"]) for r in successes) == sorted(
        [(add.id, 5), (echo.id, "x"), (flaky.id, 1)])
    [failure] = of(records, "task_failure")
    assert failure | {"pid": 0} == {
        "signal": "task_failure", "pid": 0, "id": boom.id, "name": "signal_tasks.boom",
        "exception": "ValueError('bad')", "args": ["bad"], "traceback": "traceback",
        "einfo_type": "ValueError", "einfo_text": True}
    [retry] = of(records, "task_retry")
    assert retry["id"] == flaky.id and retry["retries"] == 0 and retry["einfo"] == "Retry"
    assert "attempt 0" in retry["reason"]

    # sender= filters (by task name, by task object) and dispatch_uid
    assert [r["result"] for r in of(records, "add_success_by_name")] == [5]
    assert [r["result"] for r in of(records, "add_success_by_task")] == [5]
    assert Counter(r["name"] for r in of(records, "success_once")) == {
        "signal_tasks.add": 1, "signal_tasks.echo": 1, "signal_tasks.flaky": 1}
    assert "Signal handler" not in worker.log()  # (no receiver failed)


def test_a_solo_worker_sends_task_signals_from_its_main_process(client, start_worker,
                                                                signal_log):
    worker = start(start_worker, signal_log, "-P", "solo")
    result = client.send_task("signal_tasks.add", (1, 1))
    assert result.get(timeout=20) == 2
    wait_for(signal_log, "task_postrun")
    worker.stop()
    records = read(signal_log)
    for name in ("task_received", "task_prerun", "task_postrun", "task_success",
                 "worker_ready", "worker_shutdown"):
        assert [r["pid"] for r in of(records, name)] == [worker.pid], name
    assert of(records, "task_received")[0]["args"] == [1, 1]
    assert not of(records, "worker_process_init")  # (no pool children)


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_revoked_expired_and_terminated_tasks_send_task_revoked(client, start_worker,
                                                                signal_log, pool):
    revoked = client.send_task("signal_tasks.add", (1, 2))
    revoked.revoke()
    expired = client.send_task("signal_tasks.add", (3, 4),
                               expires=datetime.now(UTC) - timedelta(seconds=5))
    worker = start(start_worker, signal_log, "-P", pool, "-c", "1")
    found = {r["id"]: r for r in wait_for(signal_log, "task_revoked", 2)}
    assert found[revoked.id] | {"pid": 0} == {
        "signal": "task_revoked", "pid": 0, "id": revoked.id, "name": "signal_tasks.add",
        "terminated": False, "signum": None, "expired": False}
    assert found[expired.id]["expired"] is True and found[expired.id]["terminated"] is False
    wait_for_state(revoked, "REVOKED", 10)  # (stored after the signal is sent)
    wait_for_state(expired, "REVOKED", 10)
    if pool == "prefork":  # a running task whose process is killed
        running = client.send_task("signal_tasks.sleep", (30,))
        wait_for(signal_log, "task_prerun")
        running.revoke(terminate=True)
        records = wait_for(signal_log, "task_revoked", 3)
        [terminated] = [r for r in records if r["id"] == running.id]
        assert terminated["terminated"] is True and terminated["signum"] == signal.SIGTERM
        assert terminated["pid"] == worker.pid  # (its child is dead: the main process says it)
    worker.stop()
    records = read(signal_log)
    assert not of(records, "task_received", id=revoked.id)  # (as Celery: only task_revoked)
    assert not of(records, "task_prerun", id=revoked.id)
    assert Counter(r["id"] for r in of(records, "task_revoked"))[revoked.id] == 1


def test_a_task_whose_process_dies_or_passes_its_time_limit_sends_task_failure(
        client, start_worker, signal_log):
    worker = start(start_worker, signal_log, "-c", "1")
    died = client.send_task("signal_tasks.die")
    slow = client.send_task("signal_tasks.sleep", (30,), time_limit=0.5)
    found = {r["id"]: r for r in wait_for(signal_log, "task_failure", 2, timeout=30)}
    assert found[died.id]["exception"].startswith("WorkerLostError(")
    assert found[slow.id]["exception"].startswith("TimeLimitExceeded(")
    assert found[slow.id]["args"] == [30] and found[slow.id]["traceback"] == "NoneType"
    assert {r["pid"] for r in found.values()} == {worker.pid}  # (its child is dead)
    assert {r["einfo_type"] for r in found.values()} == {"WorkerLostError",
                                                         "TimeLimitExceeded"}
    assert client.send_task("signal_tasks.add", (1, 1)).get(timeout=20) == 2
    worker.stop()
    assert not of(read(signal_log), "task_postrun", id=died.id)  # (as Celery: it never ended)


def test_unknown_and_unreadable_messages_send_task_unknown_and_task_rejected(
        client, start_worker, signal_log):
    unknown = client.send_task("signal_tasks.nope", (1,))
    client.broker.enqueue([Raw(b"\x00\xff garbage, not a message")])
    client.broker.flush()
    worker = start(start_worker, signal_log, "-c", "1")
    [record] = wait_for(signal_log, "task_unknown")
    assert record | {"pid": 0} == {"signal": "task_unknown", "pid": 0,
                                   "name": "signal_tasks.nope", "id": unknown.id,
                                   "exc": "NotRegistered"}
    [rejected] = wait_for(signal_log, "task_rejected")
    assert rejected["exc"] == "BadMessage" and rejected["body"].startswith("\x00\xff garbage")
    assert client.send_task("signal_tasks.add", (2, 2)).get(timeout=20) == 4
    assert worker.proc.poll() is None
    assert not of(read(signal_log), "task_prerun", id=unknown.id)


def test_receivers_that_raise_are_logged_and_stop_neither_worker_nor_task(
        client, start_worker, signal_log):
    worker = start(start_worker, signal_log, "-c", "1", SIGNAL_RAISE="1")
    results = [client.send_task("signal_tasks.add", (i, i)) for i in range(3)]
    assert [r.get(timeout=20) for r in results] == [0, 2, 4]
    wait_for(signal_log, "task_success", 3)  # (the receivers after the broken one still run)
    log = worker.log()
    for name, receiver in (("worker_ready", "broken_ready"), ("task_prerun", "broken_prerun"),
                           ("task_success", "broken_success"),
                           ("worker_process_init", "broken_process_init")):
        assert f"Signal handler signal_tasks.{receiver} of signal {name} raised" in log, log
    assert log.count("task_prerun receiver broke") >= 3, log
    assert worker.proc.poll() is None, log
    assert worker.stop() == 0, worker.log()
    records = read(signal_log)  # one child: a warm shutdown does not start another
    assert len(of(records, "worker_process_init")) == 1, records
    assert len(of(records, "worker_process_shutdown")) == 1, records


def test_a_setup_logging_receiver_configures_logging_instead_of_runner(
        client, start_worker, signal_log):
    worker = start(start_worker, signal_log, "-c", "1", SIGNAL_OWN_LOGGING="1")
    assert client.send_task("signal_tasks.add", (1, 2)).get(timeout=20) == 3
    worker.stop()
    records = read(signal_log)
    [setup] = of(records, "setup_logging")
    assert setup["pid"] == worker.pid and setup["loglevel"] == logging.INFO
    assert setup["logfile"] is None
    assert not of(records, "after_setup_logger") and not of(records, "after_setup_task_logger")
    assert "OWN INFO" in worker.log() and "ready." in worker.log()


def test_beat_sends_beat_init_and_the_logging_signals(worker_env, tmp_path, signal_log):
    env = {**worker_env, "SIGNAL_LOG": str(signal_log)}
    beat = subprocess.Popen([sys.executable, "-m", "runner", "beat", "-A", APP, "-l", "info"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        [record] = wait_for(signal_log, "beat_init")
        assert record["pid"] == beat.pid and record["app"] == "signal_tasks"
        assert [r["pid"] for r in of(read(signal_log), "after_setup_logger")] == [beat.pid]
    finally:
        beat.terminate()
        try:
            beat.wait(10)
        except subprocess.TimeoutExpired:
            beat.kill()
            beat.wait()


# -- the sending process --------------------------------------------------------------------


@pytest.mark.transports("sqlite", "redis", "amqp")
def test_publish_signals_are_sent_around_the_enqueue_in_the_sending_process(client):
    seen = []

    def before(sender=None, body=None, exchange=None, routing_key=None, headers=None,
               properties=None, declare=None, retry_policy=None, **kwargs):
        seen.append(("before", sender, body, exchange, routing_key, dict(headers),
                     properties, declare, retry_policy))
        headers["trace_context"] = "span-1"  # (as tracing integrations do)

    def after(sender=None, body=None, exchange=None, routing_key=None, headers=None,
              **kwargs):
        seen.append(("after", sender, headers["id"], headers["task"], routing_key))

    signals.before_task_publish.connect(before)
    signals.after_task_publish.connect(after, sender="signal_tasks.add")
    try:
        result = client.send_task("signal_tasks.add", (1, 2), countdown=60)
        client.send_task("signal_tasks.echo", ("not this one",))
        message = client.build_message("signal_tasks.add", (5, 6), {"z": 1}, priority=3)
        client.publish([message])
    finally:
        assert signals.before_task_publish.disconnect(before)
        assert signals.after_task_publish.disconnect(after, sender="signal_tasks.add")
    first = seen[0]
    assert first[:5] == ("before", "signal_tasks.add", ([1, 2], {}, {
        "callbacks": None, "errbacks": None, "chain": None, "chord": None}), "", "celery")
    headers = first[5]
    assert headers["id"] == headers["root_id"] == result.id
    assert headers["task"] == "signal_tasks.add" and headers["lang"] == "py"
    assert headers["eta"] is not None and headers["retries"] == 0
    assert first[6]["correlation_id"] == result.id and first[7] == [] and first[8] is None
    assert seen[1] == ("after", "signal_tasks.add", result.id, "signal_tasks.add", "celery")
    assert [s[0:2] for s in seen[2:]] == [("before", "signal_tasks.echo"),
                                          ("before", "signal_tasks.add"),
                                          ("after", "signal_tasks.add")]
    assert seen[3][2][:2] == ([5, 6], {"z": 1}) and seen[3][6]["priority"] == 3
    assert message.headers["trace_context"] == "span-1"  # travels with the message


# -- the Signal class (no worker) -------------------------------------------------------------


class Sender:
    name = "proj.tasks.add"


class Raw:
    """Bytes put in the broker as they are (see tests/test_bad_messages.py)."""

    def __init__(self, body: bytes):
        self.id, self.queue, self.priority, self.eta, self.body = (
            uuid.uuid4().hex, "celery", None, None, body)

    def encode(self) -> bytes:
        return self.body


def test_connect_as_decorator_with_or_without_arguments_and_sender_filters():
    sig = Signal("test_signal", ("value",))
    calls = []

    @sig.connect
    def any_sender(sender=None, value=None, **kwargs):
        calls.append(("any", value, kwargs["signal"] is sig))

    task = Sender()

    @sig.connect(sender=task)
    def this_object(sender=None, **kwargs):
        calls.append(("object", kwargs["value"]))

    @sig.connect(sender="proj.tasks.add")
    def this_name(sender=None, **kwargs):
        calls.append(("name", kwargs["value"]))

    assert any_sender.__name__ == "any_sender"  # (the decorator returns the function)
    responses = sig.send(sender=task, value=1)
    assert calls == [("any", 1, True), ("object", 1), ("name", 1)]
    assert [r for _, r in responses] == [None, None, None]
    calls.clear()
    sig.send(sender=Sender(), value=2)  # another object with the same name: by name only
    assert calls == [("any", 2, True), ("name", 2)]
    calls.clear()
    sig.send(sender="proj.tasks.add", value=3)  # a name as sender (publish signals)
    assert calls == [("any", 3, True), ("name", 3)]
    calls.clear()
    sig.send(sender=None, value=4)
    assert calls == [("any", 4, True)]
    assert sig.disconnect(this_name, sender="proj.tasks.add")
    assert not sig.disconnect(this_name, sender="proj.tasks.add")


def test_dispatch_uid_connects_once_and_disconnects_by_uid():
    sig = Signal("test_signal")
    calls = []

    def first(**kwargs):
        calls.append("first")

    def second(**kwargs):
        calls.append("second")

    sig.connect(first, dispatch_uid="one")
    sig.connect(second, dispatch_uid="one")  # the same uid: not connected again
    sig.connect(first)
    sig.connect(first)  # the same receiver, no uid: once
    sig.send(sender=None)
    assert calls == ["first", "first"]
    assert sig.disconnect(dispatch_uid="one")
    calls.clear()
    sig.send(sender=None)
    assert calls == ["first"]


def test_weak_receivers_are_dropped_once_garbage_collected():
    sig = Signal("test_signal")
    calls = []

    class Listener:
        def on_signal(self, **kwargs):
            calls.append("method")

    def make_function():
        def receiver(**kwargs):
            calls.append("function")
        return receiver

    listener, function = Listener(), make_function()
    sig.connect(listener.on_signal)  # a bound method: kept through WeakMethod
    sig.connect(function)
    kept = make_function()
    sig.connect(kept, weak=False)
    sig.send(sender=None)
    assert calls == ["method", "function", "function"]
    del listener, function, kept
    gc.collect()
    calls.clear()
    assert sig.send(sender=None) and calls == ["function"]  # only the strong one
    assert len(sig.receivers) == 1


def test_a_receiver_with_a_wrong_signature_is_refused_at_connect():
    def no_kwargs(sender):
        pass

    def needs_more(sender, bogus, **kwargs):
        pass

    def positional_only(sender, /, **kwargs):
        pass

    def fine(sender, task_id, task, args, kwargs, **extra):
        pass

    for receiver, words in ((no_kwargs, "must accept keyword arguments"),
                            (needs_more, "required parameter 'bogus'"),
                            (positional_only, "required parameter 'sender'")):
        with pytest.raises(TypeError, match=words) as caught:
            signals.task_prerun.connect(receiver)
        assert isinstance(caught.value, InvalidReceiver)
        assert receiver.__qualname__ in str(caught.value) and "task_prerun" in str(caught.value)
    assert not any(entry[2]() in (no_kwargs, needs_more, positional_only)
                   for entry in signals.task_prerun.receivers if entry[3])
    signals.task_prerun.connect(fine)
    assert signals.task_prerun.disconnect(fine)
    custom = Signal(name="custom")  # a project's own signal, as Celery's: only **kwargs needed
    custom.connect(needs_more)
    with pytest.raises(InvalidReceiver, match="receiver .*no_kwargs of signal custom"):
        custom.connect(no_kwargs)
    with pytest.raises(AttributeError, match="celeryd_init"):
        signals.celeryd_init  # noqa: B018 - a Celery signal runner does not send


def test_a_receiver_that_raises_is_logged_and_the_others_still_run(caplog):
    sig = Signal("test_signal")
    calls = []

    def broken(**kwargs):
        raise RuntimeError("receiver broke")

    def fine(**kwargs):
        calls.append("fine")
        return "ok"

    sig.connect(broken)
    sig.connect(fine)
    with caplog.at_level(logging.ERROR, logger="runner.signals"):
        responses = sig.send(sender=None)
    assert calls == ["fine"]
    assert isinstance(responses[0][1], RuntimeError) and responses[1] == (fine, "ok")
    assert "Signal handler" in caplog.text and "broken" in caplog.text
    assert "test_signal" in caplog.text


def test_eager_tasks_send_the_task_signals_in_the_caller():
    app = Celery("eager-signals", broker="memory://", backend="memory://",
                 task_always_eager=True, set_as_current=False)

    @app.task(name=f"eager.add.{uuid.uuid4().hex}")
    def add(x, y):
        return x + y

    seen = []

    def prerun(sender=None, task_id=None, args=None, **kwargs):
        seen.append(("prerun", task_id, args))

    def postrun(sender=None, retval=None, state=None, **kwargs):
        seen.append(("postrun", retval, state))

    signals.task_prerun.connect(prerun, sender=add)
    signals.task_postrun.connect(postrun, sender=add.name)
    try:
        result = add.delay(2, 2)
    finally:
        signals.task_prerun.disconnect(prerun, sender=add)
        signals.task_postrun.disconnect(postrun, sender=add.name)
    assert result.get() == 4
    assert seen == [("prerun", result.id, [2, 2]), ("postrun", 4, "SUCCESS")]
