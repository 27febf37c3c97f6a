"""Small helpers the test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def wait_for_state(result, state: str, timeout: float = 5.0) -> None:
    """Wait until ``result.state`` is ``state``; fail naming the state it is in instead."""
    deadline = time.monotonic() + timeout
    while result.state != state:
        assert time.monotonic() < deadline, f"{result.id} is {result.state}, not {state}"
        time.sleep(0.01)


def rabbitmqctl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True,
                          timeout=60, check=check)


def require_rabbitmq() -> None:
    """Skip the test unless the machine's RabbitMQ (127.0.0.1:5672, rabbitmqctl) is there."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("RabbitMQ is not installed (no rabbitmqctl)")
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError:
        pytest.skip("no RabbitMQ listening on 127.0.0.1:5672")


def run_runner(*args: object, cwd: Path, env: dict | None = None,
               timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m runner ARGS`` in a process of its own, as a user runs it, on this checkout's
    ``runner`` (not an installed one), in any working directory; ``timeout`` turns a hang into
    a failure."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "runner", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
