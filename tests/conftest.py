"""Shared fixtures: a per-test SQLite broker/backend, the test app, real worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import rabbitmqctl, require_rabbitmq

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"
if str(APPS) not in sys.path:
    sys.path.insert(0, str(APPS))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "transports(*names): run the module's tests on each transport named "
        "('sqlite', 'redis', 'amqp': RabbitMQ with SQLite results); the default is sqlite only")


def pytest_generate_tests(metafunc):
    """``db_url`` is one transport by default; ``@pytest.mark.transports('sqlite', 'redis')``
    (on a test or as a module's ``pytestmark``) runs the same test on each."""
    if "transport" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("transports")
        names = list(marker.args) if marker else ["sqlite"]
        metafunc.parametrize("transport", names, indirect=True)


@pytest.fixture
def transport(request) -> str:
    return getattr(request, "param", "sqlite")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A real redis-server of the test session: 127.0.0.1, a free port, AOF on, own folder."""

    def __init__(self, folder: Path, *args: str, password: str | None = None):
        self.folder = folder
        self.port = _free_port()
        self.args, self.password = list(args), password  # more redis-server options
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.folder),
             *self.args, *(["--requirepass", self.password] if self.password else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, password=self.password)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def flush(self) -> None:
        import redis

        redis.Redis(port=self.port, password=self.password).flushall()

    def fresh(self) -> str:
        """Running (again, if a test stopped it) and empty; returns :attr:`url`."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        self.flush()
        return self.url


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """One redis-server for the session (tests needing it are skipped where none is
    installed); each test that uses it starts from an empty database."""
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def db_url(tmp_path: Path, transport: str, request) -> str:
    """Broker and results of this test: a fresh SQLite file (``sqlite:////abs/runner.db``),
    or, for the redis transport, an emptied database of the session's redis-server. (For the
    amqp transport, the results; the broker is :func:`broker_url`.)"""
    if transport == "redis":
        return request.getfixturevalue("redis_server").fresh()
    return f"sqlite:///{tmp_path}/runner.db"


@pytest.fixture(scope="session")
def rabbitmq_user():
    """A user of the machine's RabbitMQ (127.0.0.1:5672) for the session, deleted after it;
    tests needing it are skipped only where RabbitMQ is not installed or not listening."""
    import uuid

    require_rabbitmq()
    user, password = f"runner_t_{uuid.uuid4().hex[:8]}", "t-pw"
    try:
        rabbitmqctl("add_user", user, password)
        yield user, password
    finally:  # (also when add_user failed after creating it, e.g. a CLI timeout)
        rabbitmqctl("delete_user", user, check=False)


@pytest.fixture
def amqp_url(rabbitmq_user) -> str:
    """A vhost of this test's own (so no message of another test is in its queues)."""
    import uuid

    user, password = rabbitmq_user
    vhost = f"runner_t_{uuid.uuid4().hex[:8]}"
    try:
        # rabbitmqctl has failed under load after creating the vhost: what counts is that
        # the permissions can be set on it
        rabbitmqctl("add_vhost", vhost, check=False)
        for attempt in range(3):  # (rabbitmqctl, slow to start under load, fails now and then)
            done = rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*",
                               check=attempt == 2)
            if done.returncode == 0:
                break
            rabbitmqctl("add_vhost", vhost, check=False)
        yield f"amqp://{user}:{password}@127.0.0.1:5672/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost, check=False)


@pytest.fixture
def broker_url(db_url: str, transport: str, request) -> str:
    """The broker of this test: ``db_url``, or for the amqp transport a vhost of its own."""
    if transport == "amqp":
        return request.getfixturevalue("amqp_url")
    return db_url


@pytest.fixture
def worker_env(db_url: str, broker_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(APPS), str(ROOT), env.get("PYTHONPATH", "")])
    env["RUNNER_BROKER_URL"] = broker_url
    env["RUNNER_RESULT_BACKEND"] = db_url
    return env


@pytest.fixture
def app(db_url: str, broker_url: str):
    """The test app of ``tests/apps/tasks.py``, pointed at this test's database."""
    import tasks

    from runner import _state

    runtime = tasks.app.conf._runtime  # settings changed by the test are undone after it
    saved = dict(runtime.values), dict(runtime.sources)
    tasks.app.conf.update(broker_url=broker_url, result_backend=db_url)
    _state.set_current_app(tasks.app)  # as in a user's process: apps other tests made are not
    yield tasks.app
    tasks.app.close()
    runtime.values, runtime.sources = saved
    tasks.app.conf._invalidate()


class WorkerProcess:
    """A real ``runner worker`` process; its log is in ``self.log_path``."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, log_path: Path,
                 app: str = "tasks"):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runner", "worker", "-A", app, "-l", "info", *args],
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
def wait_for_lines():
    """``wait_for_lines(path, n)``: the lines of a marker file a task writes, once it has n."""

    def wait(path: Path, count: int, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = path.read_text().split() if path.exists() else []
            if len(lines) >= count:
                return lines
            time.sleep(0.02)
        raise AssertionError(f"{path} did not get {count} line(s) in {timeout}s")

    return wait


@pytest.fixture
def start_worker(worker_env, tmp_path):
    """``start_worker('-c', '2')`` starts a worker on the test database and waits for it;
    ``app='pipelines.tasks'`` runs another app than ``tests/apps/tasks.py``."""
    started: list[WorkerProcess] = []

    def start(*args: str, wait: bool = True, env: dict[str, str] | None = None,
              app: str = "tasks") -> WorkerProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        worker = WorkerProcess(list(args), {**worker_env, **(env or {})}, tmp_path, log, app)
        started.append(worker)
        if wait:
            worker.wait_for_log("ready.")
        return worker

    yield start
    for worker in started:
        worker.stop()


class PipelineHarness:
    """Pipelines of ``tests/apps/pipeline_tasks.py`` on this test's database: write a file,
    run the ``runner`` CLI in a subprocess, submit and wait in process, count task runs."""

    def __init__(self, app, env: dict[str, str], tmp_path: Path, start_worker):
        self.app, self.env, self.dir, self._start_worker = app, env, tmp_path, start_worker

    def write(self, text: str, name: str = "pipeline.yaml") -> Path:
        path = self.dir / name
        path.write_text(text)
        return path

    def cli(self, *args: str, timeout: float = 60, cwd: Path | None = None
            ) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "runner", *map(str, args)],
                              cwd=cwd or self.dir, env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def worker(self, *args: str) -> WorkerProcess:
        return self._start_worker(*args, app="pipeline_tasks")

    def submit(self, path: Path, **params):
        from runner.pipeline import engine
        from runner.pipeline.validate import load_pipeline

        return engine.submit(self.app, load_pipeline(path), params).id

    def wait(self, run_id: str, timeout: float = 30):
        from runner.pipeline.runs import RUN_DONE, load_run

        deadline = time.monotonic() + timeout
        while True:
            record = load_run(self.app.backend, run_id)
            if record.state in RUN_DONE:
                return record
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} still {record.state} after {timeout}s: "
                                     f"{ {n: s.state for n, s in record.steps.items()} }")
            time.sleep(0.05)

    def result(self, run_id: str, step: str):
        from runner.pipeline.engine import Driver
        from runner.pipeline.runs import load_run

        return Driver(self.app, run_id).step_result(load_run(self.app.backend, run_id), step)

    def marks(self) -> list[str]:
        path = self.dir / "marks.log"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def pipelines(db_url, worker_env, tmp_path, start_worker):
    """A :class:`PipelineHarness`; its app is ``pipeline_tasks.app`` on this test's database."""
    import pipeline_tasks

    app = pipeline_tasks.app
    runtime = app.conf._runtime
    saved = dict(runtime.values), dict(runtime.sources)
    app.conf.update(broker_url=db_url, result_backend=db_url)
    yield PipelineHarness(app, worker_env, tmp_path, start_worker)
    app.close()
    runtime.values, runtime.sources = saved
    app.conf._invalidate()
