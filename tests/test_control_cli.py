"""``runner inspect``, ``runner control``, ``runner status`` (online workers) and ``runner
queues``, as a user types them, against real workers on SQLite, Redis and RabbitMQ."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.helpers import run_runner

pytestmark = pytest.mark.transports("sqlite", "redis", "amqp")

HOST = socket.gethostname()


def cli(tmp_path, worker_env, *args, timeout: float = 60):
    return run_runner(*args, "-A", "tasks", cwd=tmp_path, env=worker_env, timeout=timeout)


def test_inspect_ping_and_status_list_the_online_workers(app, start_worker, tmp_path,
                                                         worker_env):
    start_worker("-n", "a@%h", "-c", "1")
    start_worker("-n", "b@%h", "-c", "1")
    done = cli(tmp_path, worker_env, "inspect", "ping", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {f"a@{HOST}": {"ok": "pong"}, f"b@{HOST}": {"ok": "pong"}}
    done = cli(tmp_path, worker_env, "status")
    assert done.returncode == 0, done.stderr
    assert f"->  a@{HOST}: OK" in done.stdout and f"->  b@{HOST}: OK" in done.stdout
    assert "2 nodes online." in done.stdout
    done = cli(tmp_path, worker_env, "inspect", "stats", "-d", f"a@{HOST}")
    assert done.returncode == 0, done.stderr
    assert f"a@{HOST}" in done.stdout and f"b@{HOST}" not in done.stdout
    assert done.stdout.splitlines()[0].split()[:3] == ["NODE", "PID", "POOL"]


def test_inspect_active_shows_a_running_task_in_a_table(app, start_worker, tmp_path,
                                                       worker_env):
    from tasks import sleep

    start_worker("-n", "busy@%h", "-c", "1")
    result = sleep.delay(20)
    deadline = time.monotonic() + 10
    while True:
        done = cli(tmp_path, worker_env, "inspect", "active")
        if result.id in done.stdout or time.monotonic() > deadline:
            break
    assert result.id in done.stdout and "tasks.sleep" in done.stdout, done.stdout
    assert done.stdout.rstrip().endswith("  20")  # its arguments, as the call wrote them
    app.control.revoke(result.id, terminate=True)


def test_control_commands_and_their_errors(app, start_worker, tmp_path, worker_env):
    start_worker("-n", "c@%h", "-c", "1")
    me = f"c@{HOST}"
    done = cli(tmp_path, worker_env, "control", "pool_grow", "1")
    assert done.returncode == 0, done.stderr
    assert me in done.stdout and "pool will grow" in done.stdout
    done = cli(tmp_path, worker_env, "control", "pool_shrink", "0")
    assert done.returncode == 1 and "n must be at least 1" in done.stdout
    done = cli(tmp_path, worker_env, "control", "rate_limit", "tasks.add", "fast")
    assert done.returncode == 1 and "Invalid rate limit string: 'fast'" in done.stdout
    done = cli(tmp_path, worker_env, "control", "pool_grow", "many")
    assert done.returncode == 2 and "n must be a int, got 'many'" in done.stderr
    done = cli(tmp_path, worker_env, "control", "ping")
    assert done.returncode == 2 and "it is a 'runner inspect' command" in done.stderr
    done = cli(tmp_path, worker_env, "control", "election")
    assert done.returncode == 2 and "'election'" in done.stderr and "NotSupported" in done.stderr
    done = cli(tmp_path, worker_env, "inspect", "query_task", "no-such-task")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{me:<28} - empty -" in done.stdout and "ERROR" not in done.stdout
    done = cli(tmp_path, worker_env, "inspect", "ping", "-d", f"nobody@{HOST}", "-t", "0.5")
    assert done.returncode == 69
    assert f"nobody@{HOST}" in done.stderr and "No nodes replied" in done.stderr


def test_inspect_with_no_worker_says_so_within_the_timeout(tmp_path, worker_env, app):
    started = time.monotonic()
    done = cli(tmp_path, worker_env, "inspect", "ping", "--timeout", "0.5")
    assert done.returncode == 69
    assert "No nodes replied within time constraint (0.5s)" in done.stderr
    assert time.monotonic() - started < 30
    done = cli(tmp_path, worker_env, "status", "--help")
    assert "Without RUN_ID" in done.stdout


def test_queues_shows_waiting_delayed_claimed_and_consumers(app, start_worker, tmp_path,
                                                           worker_env, transport):
    from tasks import add, slow_late

    for _ in range(3):
        add.apply_async((1, 2), queue="idle")
    add.apply_async((1, 2), queue="idle", countdown=300)
    start_worker("-n", "qw@%h", "-c", "1", "-Q", "celery")
    running = slow_late.delay(20)  # (acks late: claimed, unacked while it runs)
    deadline = time.monotonic() + 10
    while not (app.control.inspect().active() or {}).get(f"qw@{HOST}"):
        assert time.monotonic() < deadline, "the task did not start"
        time.sleep(0.1)
    done = cli(tmp_path, worker_env, "queues", "-Q", "celery,idle", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    table = data["queues"]
    assert table["idle"]["waiting"] == 3 and table["idle"]["consumers"] == []
    assert table["celery"]["consumers"] == [f"qw@{HOST}"]
    assert table["celery"]["claimed"] == 1
    if transport == "amqp":  # RabbitMQ: delayed ones are counted before they reach a queue
        assert table["idle"]["delayed"] is None
        assert data["delayed_not_yet_in_a_queue"] == 1
    else:
        assert table["idle"]["delayed"] == 1
    done = cli(tmp_path, worker_env, "queues", "-Q", "celery,idle")
    assert done.stdout.splitlines()[0].split() == ["QUEUE", "WAITING", "DELAYED", "CLAIMED",
                                                   "CONSUMERS", "WORKERS"]
    app.control.revoke(running.id, terminate=True)
