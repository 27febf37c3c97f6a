"""Task arguments kept out of what runner shows (issue 20): ``@app.task(hide_args=True)`` and
Celery's ``apply_async(argsrepr=..., kwargsrepr=...)`` travel with the message, and a dead
letter's listing shows them instead of the arguments."""

from __future__ import annotations

import json

import pytest

from runner import Celery
from tests.conftest import ROOT
from tests.helpers import run_runner

pytestmark = pytest.mark.transports("sqlite", "redis")

SECRET = "4111-1111-1111-1111"


def test_a_hidden_task_s_arguments_never_show_in_a_dead_letter(broker_url, db_url,
                                                                 start_worker, worker_env,
                                                                 tmp_path):
    producer = Celery("shop", broker=broker_url, backend=db_url, set_as_current=False)

    @producer.task(name="shop.charge", hide_args=True)
    def charge(card, amount):
        return amount

    start_worker()  # (tests/apps/tasks.py: it does not know shop.charge: a dead letter)
    result = charge.delay(SECRET, amount=12)
    with pytest.raises(Exception, match="shop.charge"):
        result.get(timeout=20)
    shown = run_runner("dead-letters", "show", result.id, cwd=tmp_path, env=worker_env)
    assert shown.returncode == 0, shown.stderr
    assert SECRET not in shown.stdout
    assert "arguments not shown: args=*** kwargs=***" in shown.stdout
    as_json = run_runner("dead-letters", "show", result.id, "--json", cwd=tmp_path,
                         env=worker_env)
    assert SECRET not in as_json.stdout and json.loads(as_json.stdout)["task"] == "shop.charge"
    listed = run_runner("dead-letters", "list", "--json", cwd=tmp_path, env=worker_env)
    assert SECRET not in listed.stdout


def test_argsrepr_and_kwargsrepr_as_celery(broker_url, db_url):
    app = Celery("shop", broker=broker_url, backend=db_url, set_as_current=False)
    message = app.build_message("shop.charge", (SECRET,), {"amount": 3},
                                argsrepr="('<card>',)", kwargsrepr="{'amount': 3}")
    assert message.options["argsrepr"] == "('<card>',)"
    assert message.options["kwargsrepr"] == "{'amount': 3}"
    from runner.message import Message, shown_arguments

    decoded = Message.decode(message.encode())
    assert shown_arguments(decoded.options, [SECRET], {"amount": 3}) == (
        "('<card>',)", "{'amount': 3}")
    assert shown_arguments({}, [1, 2], {}) == ("(1, 2)", "{}")


def test_inspect_and_events_show_the_argsrepr_not_the_arguments(app, start_worker, tmp_path,
                                                                 worker_env):
    """What the cluster shows of a running task whose caller hid its arguments."""
    import time

    from tasks import sleep

    worker = start_worker("-c", "1", "-E")
    import subprocess
    import sys

    env = {**worker_env, "PYTHONPATH": f"{ROOT}:{worker_env.get('PYTHONPATH', '')}"}
    watcher = subprocess.Popen([sys.executable, "-m", "runner", "events", "--dump", "--timeout",
                                "8"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    time.sleep(2)  # the watcher listening before the task is sent
    result = sleep.apply_async((20, SECRET), argsrepr="(20, '***')", kwargsrepr="{}")
    deadline = time.monotonic() + 30
    active: list = []
    while not active:
        assert time.monotonic() < deadline, "the task was never shown active"
        replies = app.control.inspect(timeout=1.0).active() or {}
        active = [r for found in replies.values() for r in found if r["id"] == result.id]
    assert active[0]["args"] == "(20, '***')"
    assert SECRET not in json.dumps(replies)
    dumped, _ = watcher.communicate(timeout=30)
    assert f"tasks.sleep({result.id})" in dumped, dumped
    assert SECRET not in dumped and "args=(20, '***')" in dumped, dumped
    app.control.revoke(result.id, terminate=True)
    assert SECRET not in worker.log()
