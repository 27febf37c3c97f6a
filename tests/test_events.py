"""Events with real workers on SQLite, Redis and RabbitMQ: Celery's task and worker events,
``app.events`` (Receiver, State), heartbeats, and ``runner events --dump / --json``."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.transports("sqlite", "redis", "amqp")

HOST = socket.gethostname()


class Collector:
    """A receiver in a thread, keeping every event and a State."""

    def __init__(self, app):
        self.events: list[dict] = []
        self.state = app.events.State()
        self.receiver = app.events.Receiver(handlers={"*": self.keep})
        self.thread = threading.Thread(target=self.receiver.capture, daemon=True)
        self.thread.start()
        assert self.receiver.listening.wait(10)

    def keep(self, event: dict) -> None:
        self.events.append(event)
        self.state.event(event)

    def wait_for(self, check, timeout: float = 15.0, what: str = "events"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{what} not seen in {timeout}s; got "
                             f"{[(e['type'], e.get('uuid')) for e in self.events]}")

    def of(self, uuid: str) -> list[str]:
        return [e["type"] for e in self.events if e.get("uuid") == uuid]

    def stop(self) -> None:
        self.receiver.should_stop = True
        self.thread.join(5)


@pytest.fixture
def collector(app):
    made = Collector(app)
    yield made
    made.stop()


def test_task_events_from_sent_to_succeeded_and_failed(app, start_worker, collector):
    from tasks import add, boom

    app.conf.update(task_send_sent_event=True)
    start_worker("-n", "ev@%h", "-c", "1", "-E")
    ok = add.delay(2, 3)
    assert ok.get(timeout=15) == 5
    bad = boom.delay("no")
    with pytest.raises(ValueError):
        bad.get(timeout=15)
    collector.wait_for(lambda: "task-failed" in collector.of(bad.id), what="task-failed")
    collector.wait_for(lambda: "task-succeeded" in collector.of(ok.id), what="task-succeeded")
    assert collector.of(ok.id) == ["task-sent", "task-received", "task-started",
                                   "task-succeeded"]
    succeeded = next(e for e in collector.events
                     if e["type"] == "task-succeeded" and e["uuid"] == ok.id)
    assert succeeded["result"] == "5" and succeeded["runtime"] >= 0
    assert succeeded["hostname"] == f"ev@{HOST}"
    received = next(e for e in collector.events
                    if e["type"] == "task-received" and e["uuid"] == ok.id)
    assert received["name"] == "tasks.add" and received["args"] == "[2, 3]"
    failed = next(e for e in collector.events
                  if e["type"] == "task-failed" and e["uuid"] == bad.id)
    assert "ValueError" in failed["exception"] and "Traceback" in failed["traceback"]
    task = collector.state.tasks[ok.id]
    assert (task.state, task.name, task.worker) == ("SUCCESS", "tasks.add", f"ev@{HOST}")
    assert collector.state.tasks[bad.id].state == "FAILURE"
    assert collector.state.workers[f"ev@{HOST}"].alive


def test_without_task_events_only_worker_events_are_sent(app, start_worker, collector):
    from tasks import add

    start_worker("-n", "quiet@%h", "-c", "1")
    collector.wait_for(lambda: any(e["type"] == "worker-online" for e in collector.events),
                       what="worker-online")
    result = add.delay(1, 1)
    assert result.get(timeout=15) == 2
    collector.wait_for(lambda: any(e["type"] == "worker-heartbeat" for e in collector.events),
                       what="a heartbeat")
    assert collector.of(result.id) == []


def test_a_killed_worker_stops_heartbeats_and_is_shown_offline(app, start_worker, collector,
                                                               worker_env):
    worker = start_worker("-n", "hb@%h", "-c", "1", env={"RUNNER_WORKER_HEARTBEAT": "0.5"})
    me = f"hb@{HOST}"
    beats = collector.wait_for(
        lambda: [e for e in collector.events
                 if e["type"] == "worker-heartbeat" and e["hostname"] == me][2:],
        what="three heartbeats")
    assert beats[0]["freq"] == 0.5 and "active" in beats[0] and "processed" in beats[0]
    assert len(beats[0]["loadavg"]) == 3
    assert collector.state.workers[me].alive
    worker.proc.send_signal(signal.SIGKILL)
    worker.proc.wait(10)
    killed = time.monotonic()
    collector.wait_for(lambda: not collector.state.workers[me].alive, what="offline")
    assert time.monotonic() - killed <= 3 * 0.5 + 0.5
    assert not any(e["type"] == "worker-offline" for e in collector.events)


def test_warm_shutdown_sends_worker_offline(app, start_worker, collector):
    worker = start_worker("-n", "bye@%h", "-c", "1")
    collector.wait_for(lambda: f"bye@{HOST}" in collector.state.workers, what="online")
    worker.stop()
    collector.wait_for(lambda: any(e["type"] == "worker-offline" for e in collector.events),
                       what="worker-offline")
    assert not collector.state.workers[f"bye@{HOST}"].alive


def test_runner_events_dump_shows_a_task_from_sent_to_succeeded(app, start_worker, tmp_path,
                                                                worker_env):
    from tasks import add

    app.conf.update(task_send_sent_event=True)
    start_worker("-n", "d@%h", "-c", "1", "-E")
    out = tmp_path / "dump.txt"
    with open(out, "wb") as sink:
        dumper = subprocess.Popen(
            [sys.executable, "-m", "runner", "-A", "tasks", "events", "--dump", "--timeout",
             "30"], cwd=tmp_path, env=worker_env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while "worker heartbeat" not in out.read_text():  # (its wakeup: it listens)
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.05)
        result = add.delay(20, 22)
        assert result.get(timeout=15) == 42
        lines = []
        while time.monotonic() < deadline:
            lines = [x for x in out.read_text().splitlines() if result.id in x]
            if len(lines) == 4:
                break
            time.sleep(0.05)
        kinds = [line.split("] ", 1)[1].split(":", 1)[0] for line in lines]
        assert kinds == ["task sent", "task received", "task started", "task succeeded"]
        assert f"tasks.add({result.id})" in lines[1] and "args=[20, 22]" in lines[1]
        assert lines[3].startswith(f"d@{HOST} [") and "result=42" in lines[3]
        assert all(f"tasks.add({result.id})" in line for line in lines)  # (named as Celery's)
    finally:
        dumper.send_signal(signal.SIGINT)
        dumper.wait(10)


def test_runner_events_json_prints_one_event_per_line(app, start_worker, tmp_path, worker_env):
    start_worker("-n", "j@%h", "-c", "1")
    done = subprocess.run([sys.executable, "-m", "runner", "-A", "tasks", "events", "--json",
                           "--limit", "1", "--timeout", "20"], cwd=tmp_path, env=worker_env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    event = json.loads(done.stdout.splitlines()[0])
    assert event["type"] in ("worker-online", "worker-heartbeat")
    assert event["hostname"] == f"j@{HOST}"


TWO_STEPS = """\
name: evented
app: pipeline_tasks
steps:
  first: {task: pipeline_tasks.echo, args: [1]}
  second: {task: pipeline_tasks.echo, args: [2], needs: [first]}
"""


ALERT_STEP = """\
  alert: {task: pipeline_tasks.echo, args: [3], needs: [second], trigger_rule: one_failed}
"""


@pytest.mark.transports("sqlite", "redis")
def test_a_pipeline_run_sends_run_and_step_events(pipelines):
    collector = Collector(pipelines.app)
    try:
        pipelines.worker("-n", "pw@%h", "-c", "1")
        run = pipelines.submit(pipelines.write(TWO_STEPS + ALERT_STEP))
        assert pipelines.wait(run).state == "success"
        collector.wait_for(lambda: any(e["type"] == "run-finished" for e in collector.events),
                           what="run-finished")
        mine = [(e["type"], e.get("step"), e.get("state")) for e in collector.events
                if e.get("run_id") == run]
        assert mine[0] == ("run-started", None, None)
        assert [m for m in mine if m[0] == "step-changed"] == [
            ("step-changed", "first", "running"), ("step-changed", "first", "success"),
            ("step-changed", "second", "running"), ("step-changed", "second", "success"),
            ("step-changed", "alert", "skipped")]  # (its trigger rule: one_failed)
        assert mine[-1] == ("run-finished", None, "success")
        assert {e["hostname"] for e in collector.events  # (sent by the worker's processes)
                if e["type"] == "step-changed"} == {f"pw@{HOST}"}
    finally:
        collector.stop()


@pytest.mark.transports("sqlite")
def test_runner_run_sends_the_events_of_its_tasks(pipelines):
    """``runner run``'s own worker sends task events: a monitor (runner events, the
    dashboard) shows the run's tasks, not only its steps."""
    collector = Collector(pipelines.app)
    try:
        done = pipelines.cli("run", str(pipelines.write(TWO_STEPS)), timeout=90)
        assert done.returncode == 0, done.stderr
        collector.wait_for(lambda: [e for e in collector.events
                                    if e["type"] == "task-succeeded"], what="task-succeeded")
        received = [e for e in collector.events if e["type"] == "task-received"]
        assert {e["name"] for e in received} == {"pipeline_tasks.echo"}
    finally:
        collector.stop()


BEAT_APP = """
from runner import Celery

app = Celery('beatevents')
app.conf.beat_schedule = {'tick': {'task': 'beatevents.tick', 'schedule': 1.0}}

@app.task
def tick():
    return 'tick'
"""


@pytest.mark.transports("sqlite")
def test_beat_sends_beat_fired(app, start_worker, worker_env, tmp_path, collector):
    import os

    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "beatevents.py").write_text(BEAT_APP)
    start_worker("-B", "-c", "1", app="beatevents",
                 env={"PYTHONPATH": f"{mods}{os.pathsep}{worker_env['PYTHONPATH']}"})
    # (its first fire is due within a second: 15 s is for a loaded machine; a worker that
    # forked its pool while beat wrote once waited out SQLite's 30 s busy timeout here)
    fired = collector.wait_for(
        lambda: [e for e in collector.events if e["type"] == "beat-fired"], timeout=15,
        what="beat-fired")
    assert fired[0]["entry"] == "tick" and fired[0]["kind"] == "task" and fired[0]["id"]
