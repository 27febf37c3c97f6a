"""Shared fixtures: a per-test SQLite broker/backend, the test app, real worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"
if str(APPS) not in sys.path:
    sys.path.insert(0, str(APPS))


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A fresh SQLite file for broker and results: ``sqlite:////abs/path/runner.db``."""
    return f"sqlite:///{tmp_path}/runner.db"


@pytest.fixture
def worker_env(db_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(APPS), str(ROOT), env.get("PYTHONPATH", "")])
    env["RUNNER_BROKER_URL"] = db_url
    env["RUNNER_RESULT_BACKEND"] = db_url
    return env


@pytest.fixture
def app(db_url: str):
    """The test app of ``tests/apps/tasks.py``, pointed at this test's database."""
    import tasks

    runtime = tasks.app.conf._runtime  # settings changed by the test are undone after it
    saved = dict(runtime.values), dict(runtime.sources)
    tasks.app.conf.update(broker_url=db_url, result_backend=db_url)
    yield tasks.app
    tasks.app.close()
    runtime.values, runtime.sources = saved
    tasks.app.conf._invalidate()


class WorkerProcess:
    """A real ``runner worker`` process; its log is in ``self.log_path``."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, log_path: Path):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runner", "worker", "-A", "tasks", "-l", "info", *args],
            cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited ({self.proc.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in worker log after {timeout}s:\n"
                                     f"{self.log()}")
            time.sleep(0.02)

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def kill_all(self) -> None:
        """SIGKILL the worker and its children (its whole session)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill_all()
        try:  # children left behind by a test that killed only the parent
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_worker(worker_env, tmp_path):
    """``start_worker('-c', '2')`` starts a worker on the test database and waits for it."""
    started: list[WorkerProcess] = []

    def start(*args: str, wait: bool = True, env: dict[str, str] | None = None) -> WorkerProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        worker = WorkerProcess(list(args), {**worker_env, **(env or {})}, tmp_path, log)
        started.append(worker)
        if wait:
            worker.wait_for_log("ready.")
        return worker

    yield start
    for worker in started:
        worker.stop()
