"""A broker or result backend never reached fails fast, naming the URL (password masked).

Each test points at a closed port of 127.0.0.1 (a free port nobody listens on): ``delay()``,
``AsyncResult.get()``, ``runner worker``, ``runner call`` and ``runner purge`` give up within
``broker_connection_timeout`` (4 s by default), not after minutes of retries. A server that
had answered is ridden out instead (tests/test_redis_outage.py, tests/test_amqp_broker.py).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from runner import Celery
from runner.exceptions import BackendError, BrokerError
from tests.conftest import APPS, ROOT

PASSWORD = "s3cret-pw"
BUDGET = 4.0 + 2.0  # broker_connection_timeout, and a margin for a loaded machine


def closed_port() -> int:
    """A port of 127.0.0.1 that nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_url(scheme: str, port: int) -> str:
    if scheme == "redis":
        return f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    return f"amqp://someone:{PASSWORD}@127.0.0.1:{port}/somewhere"


def masked(url: str) -> str:
    return url.replace(PASSWORD, "**")


def make_app(broker: str, backend: str, **settings) -> Celery:
    app = Celery("closed", broker=broker, backend=backend)
    app.conf.update(**settings)

    @app.task(name="closed.add")
    def add(x, y):
        return x + y
    return app


@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_delay_to_a_broker_never_reached_fails_fast_naming_the_masked_url(scheme, tmp_path):
    url = closed_url(scheme, closed_port())
    app = make_app(url, f"sqlite:///{tmp_path}/results.db")
    began = time.monotonic()
    with pytest.raises(BrokerError) as caught:
        app.tasks["closed.add"].delay(2, 2)
    took = time.monotonic() - began
    text = str(caught.value)
    assert took < BUDGET, text
    assert masked(url) in text and PASSWORD not in text
    assert "Connection refused" in text and "attempts in" in text


def test_get_from_a_result_backend_never_reached_fails_fast(tmp_path):
    url = closed_url("redis", closed_port()).replace("/0", "/1")
    app = make_app(f"sqlite:///{tmp_path}/broker.db", url)
    began = time.monotonic()
    with pytest.raises(BackendError) as caught:
        app.AsyncResult("no-such-task").get(timeout=30)
    took = time.monotonic() - began
    text = str(caught.value)
    assert took < BUDGET, text
    assert masked(url) in text and PASSWORD not in text and "Connection refused" in text


def test_without_retry_on_startup_the_first_refusal_is_the_error(tmp_path):
    url = closed_url("redis", closed_port())
    app = make_app(url, f"sqlite:///{tmp_path}/results.db",
                   broker_connection_retry_on_startup=False)
    began = time.monotonic()
    with pytest.raises(BrokerError, match="after 1 attempt in") as caught:
        app.tasks["closed.add"].delay(2, 2)
    assert time.monotonic() - began < 1.0, str(caught.value)


def test_broker_connection_max_retries_bounds_the_first_connection(tmp_path):
    url = closed_url("amqp", closed_port())
    app = make_app(url, f"sqlite:///{tmp_path}/results.db", broker_connection_max_retries=2,
                   broker_connection_timeout=30)
    began = time.monotonic()
    with pytest.raises(BrokerError, match="after 2 attempts in") as caught:
        app.tasks["closed.add"].delay(2, 2)
    assert time.monotonic() - began < 2.0, str(caught.value)


def run_cli(args: list[str], broker: str, backend: str, cwd) -> tuple[subprocess.CompletedProcess,
                                                                      float]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{APPS}:{ROOT}",
           "RUNNER_BROKER_URL": broker, "RUNNER_RESULT_BACKEND": backend}
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "runner", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60)
    return done, time.monotonic() - began


STARTUP = 3.0  # seconds a runner process takes to import before it connects, on a loaded box


@pytest.mark.parametrize("command", [
    ["worker", "-A", "tasks", "-c", "1"],
    ["call", "-A", "tasks", "tasks.add", "--args", "[1, 2]"],
    ["purge", "-A", "tasks", "-f"],
], ids=["worker", "call", "purge"])
@pytest.mark.parametrize("scheme", ["redis", "amqp"])
def test_cli_on_a_broker_never_reached_exits_at_once_with_one_line(command, scheme, tmp_path):
    url = closed_url(scheme, closed_port())
    done, took = run_cli(command, url, f"sqlite:///{tmp_path}/results.db", tmp_path)
    assert done.returncode != 0
    assert took < BUDGET + STARTUP, done.stderr
    assert "Traceback" not in done.stderr and PASSWORD not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()  # the error alone, not a warning per attempt
    assert len(lines) == 1 and lines[0].startswith("Error: could not connect to"), done.stderr
    assert masked(url) in lines[0]


def test_worker_on_a_result_backend_never_reached_exits_at_once(tmp_path):
    url = closed_url("redis", closed_port())
    done, took = run_cli(["worker", "-A", "tasks", "-c", "1"],
                         f"sqlite:///{tmp_path}/broker.db", url, tmp_path)
    assert done.returncode != 0 and took < BUDGET + STARTUP, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and masked(url) in lines[0], done.stderr
