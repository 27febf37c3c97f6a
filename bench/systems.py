"""The systems compared, behind one small interface: send, wait, count stored results, and
the command that starts a worker with 2 processes.

Each system's task module lives in ``bench/apps``. On SQLite it reads the path of its file(s)
from ``BENCH_DB`` (and ``BENCH_RESULTS_DB``); on Redis and on AMQP the URLs of its broker and
result backend from ``BENCH_BROKER_URL`` and ``BENCH_RESULT_URL``; so the client here and the
worker process use the same store. On AMQP only the broker moves to RabbitMQ: results stay in
Redis, so that the drain is counted the same way on both. Stored results are counted without
slowing the drain: on SQLite with a plain read-only ``sqlite3`` query on the system's own table
(in WAL mode the reader blocks no writer), on Redis (and AMQP) with ``DBSIZE`` of the results
database, which holds nothing but one key per result (broker in db 0, results in db 1, flushed
before each system).
"""

from __future__ import annotations

import importlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

APPS = Path(__file__).resolve().parent / "apps"


BROKER_DB, RESULT_DB = 0, 1  # Redis databases


class System:
    """One task queue under test, with its files in ``workdir``, on the redis-server at
    ``redis`` (``redis://127.0.0.1:PORT``) or, when that is None, on SQLite files; with
    ``amqp`` (``amqp://user:password@127.0.0.1:5672/vhost``) the broker is RabbitMQ and only
    the results are in Redis."""

    name = ""
    module = ""  # the task module in bench/apps
    transports = ("sqlite", "redis", "amqp")

    def __init__(self, workdir: Path, redis: str | None = None, amqp: str | None = None):
        if amqp and not redis:
            raise ValueError("the amqp transport keeps its results in Redis: give redis too")
        self.workdir = workdir
        self.redis = redis
        self.amqp = amqp
        self.db = workdir / f"{self.name}.db"
        self.tasks: Any = None
        self._results_client: Any = None

    @property
    def broker_url(self) -> str:
        return self.amqp or f"{self.redis}/{BROKER_DB}"

    @property
    def result_url(self) -> str:
        return f"{self.redis}/{RESULT_DB}"

    def env(self) -> dict[str, str]:
        """Environment of the client (this process) and of the worker."""
        path = os.pathsep.join([str(APPS), os.environ.get("PYTHONPATH", "")])
        env = {"BENCH_DB": str(self.db), "PYTHONPATH": path}
        if self.redis:
            env.update(BENCH_BROKER_URL=self.broker_url, BENCH_RESULT_URL=self.result_url)
        return env

    def load(self) -> None:
        """Import the task module (after :meth:`env` is in ``os.environ``)."""
        if str(APPS) not in sys.path:
            sys.path.insert(0, str(APPS))
        self.tasks = importlib.import_module(self.module)

    def worker_command(self) -> list[str]:
        raise NotImplementedError

    def send(self, i: int) -> Any:
        """``add.delay(i, i)``, or what the system calls it; returns its result handle."""
        raise NotImplementedError

    def get(self, handle: Any, timeout: float) -> Any:
        raise NotImplementedError

    def stored(self) -> int:
        """How many results are stored now (successful ones, where SQLite lets us tell)."""
        if not self.redis:
            return self.stored_sqlite()
        if self._results_client is None:
            import redis

            self._results_client = redis.Redis.from_url(self.result_url)
        return self._results_client.dbsize()

    def stored_sqlite(self) -> int:
        raise NotImplementedError

    def bulk_send(self, count: int) -> None:
        """Send ``count`` tasks in one call, where the system has one (else NotImplemented)."""
        raise NotImplementedError

    def _count(self, path: Path, sql: str, *params: Any) -> int:
        if not path.exists():
            return 0
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute(sql, params).fetchone()[0]
        except sqlite3.OperationalError:  # the table does not exist yet
            return 0
        finally:
            conn.close()


class Runner(System):
    name = "runner"
    module = "benchtasks"

    def env(self) -> dict[str, str]:
        # the env settings would win over the app's: set them too
        broker = self.broker_url if self.redis else f"sqlite:///{self.db}"
        backend = self.result_url if self.redis else broker
        return {**super().env(), "RUNNER_BROKER_URL": broker, "RUNNER_RESULT_BACKEND": backend}

    def worker_command(self) -> list[str]:
        return [sys.executable, "-m", "runner", "worker", "-A", self.module, "-c", "2",
                "-P", "prefork", "-l", "warning", "--quiet"]

    def send(self, i: int) -> Any:
        return self.tasks.add.delay(i, i)

    def get(self, handle: Any, timeout: float) -> Any:
        return handle.get(timeout=timeout)

    def stored_sqlite(self) -> int:
        return self._count(self.db, "SELECT count(*) FROM runner_results WHERE state = ?",
                           "SUCCESS")

    def bulk_send(self, count: int) -> None:
        app = self.tasks.app
        app.broker.enqueue([app.build_message("benchtasks.add", (i, i)) for i in range(count)])


class RunnerSigned(Runner):
    """runner with message signing (issue 20): every message signed with an EC P-256 key
    (``task_serializer='auth'``) and checked by the worker (``accept_content=['auth']``);
    the key and a self-signed certificate are made by ``openssl`` in the system's folder."""

    name = "runner-auth"
    transports = ("redis", "amqp")

    def env(self) -> dict[str, str]:
        keys = self.workdir / "signing"
        if not (keys / "bench.crt").exists():
            keys.mkdir(parents=True, exist_ok=True)
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-nodes", "-keyout", "bench.key",
                            "-out", "bench.crt", "-days", "2", "-subj", "/CN=bench"],
                           cwd=keys, check=True, capture_output=True)
        return {**super().env(), "BENCH_SIGNING_DIR": str(keys)}


class RunnerSentinel(Runner):
    """runner reaching the same redis-server through Redis Sentinel (issue 21): a
    ``redis-sentinel`` of its own (``redis-server --sentinel`` where Debian's redis-sentinel is
    not installed) monitors it, and broker and results are ``sentinel://`` URLs with
    ``master_name``; stopped with the system's session. Measured in rounds against ``runner``
    (see ``pairs.py``)."""

    name = "runner-sentinel"
    transports = ("redis",)
    _sentinel: subprocess.Popen | None = None

    def env(self) -> dict[str, str]:
        port = self._start_sentinel()
        url = f"sentinel://127.0.0.1:{port}"
        return {**super().env(), "BENCH_BROKER_URL": f"{url}/{BROKER_DB}",
                "BENCH_RESULT_URL": f"{url}/{RESULT_DB}", "BENCH_SENTINEL_MASTER": "bench",
                "RUNNER_BROKER_URL": f"{url}/{BROKER_DB}",
                "RUNNER_RESULT_BACKEND": f"{url}/{RESULT_DB}",
                "RUNNER_BROKER_TRANSPORT_OPTIONS": '{"master_name": "bench"}'}

    def _start_sentinel(self) -> int:
        if RunnerSentinel._sentinel is None or RunnerSentinel._sentinel.poll() is not None:
            import socket
            import time

            assert self.redis, "the Sentinel row needs the bench's redis-server"
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            master = int(self.redis.rsplit(":", 1)[1])
            config = self.workdir / "sentinel.conf"
            config.write_text(f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                              f"sentinel monitor bench 127.0.0.1 {master} 1\n")
            import shutil

            command = (["redis-sentinel", str(config)] if shutil.which("redis-sentinel")
                       else ["redis-server", str(config), "--sentinel"])
            RunnerSentinel._sentinel = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            RunnerSentinel._port = port
            import atexit

            atexit.register(RunnerSentinel._sentinel.terminate)
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{command[0]} did not start") from None
                    time.sleep(0.05)
        return RunnerSentinel._port


class RunnerWait(Runner):
    """runner with ``wait_for_replicas: 1`` (issue 21) for broker and results: each enqueue
    and each stored result waits for a replica's acknowledgement (Redis ``WAIT``). Measured
    in rounds against ``runner`` while ``run.py`` keeps a replica of the bench's
    redis-server attached for both (see ``pairs.py``)."""

    name = "runner-wait"
    transports = ("redis",)

    def env(self) -> dict[str, str]:
        options = '{"wait_for_replicas": 1}'
        return {**super().env(), "BENCH_WAIT_FOR_REPLICAS": "1",
                "RUNNER_BROKER_TRANSPORT_OPTIONS": options,
                "RUNNER_RESULT_BACKEND_TRANSPORT_OPTIONS": options}


class RunnerEvents(Runner):
    """runner with ``-E``: its task events on (issue 18: within 15 % of the drain, 10 % of the
    round trip p50 without them). Nobody receives them: what they cost the worker is measured.
    """

    name = "runnerE"
    transports = ("redis", "amqp")

    def worker_command(self) -> list[str]:
        return [*super().worker_command(), "-E"]


class Huey(System):
    name = "huey"
    module = "hueytasks"
    transports = ("sqlite",)

    def worker_command(self) -> list[str]:
        # huey_consumer.py with 2 worker processes; polling delays are Huey's defaults
        return [sys.executable, "-m", "huey.bin.huey_consumer", f"{self.module}.huey",
                "-w", "2", "-k", "process", "-q"]

    def send(self, i: int) -> Any:
        return self.tasks.add(i, i)

    def get(self, handle: Any, timeout: float) -> Any:
        return handle.get(blocking=True, timeout=timeout)

    def stored_sqlite(self) -> int:
        return self._count(self.db, "SELECT count(*) FROM kv WHERE queue = ?", "bench")


class Celery(System):
    name = "celery"
    module = "celerytasks"

    def __init__(self, workdir: Path, redis: str | None = None, amqp: str | None = None):
        super().__init__(workdir, redis, amqp)
        self.results_db = workdir / "celery-results.db"

    def env(self) -> dict[str, str]:
        return {**super().env(), "BENCH_RESULTS_DB": str(self.results_db)}

    def worker_command(self) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", self.module, "worker", "-c", "2",
                "--pool", "prefork", "-l", "warning"]

    def send(self, i: int) -> Any:
        return self.tasks.add.delay(i, i)

    def get(self, handle: Any, timeout: float) -> Any:
        return handle.get(timeout=timeout)

    def stored_sqlite(self) -> int:
        return self._count(self.results_db,
                           "SELECT count(*) FROM celery_taskmeta WHERE status = ?", "SUCCESS")


class Dramatiq(System):
    """Dramatiq's CLI with 2 processes of ``threads`` worker threads each (its default is 8)."""

    name = "dramatiq"
    module = "dramatiqtasks"
    transports = ("redis",)
    threads = 1

    def worker_command(self) -> list[str]:
        return [sys.executable, "-m", "dramatiq", self.module, "-p", "2", "-t",
                str(self.threads)]

    def send(self, i: int) -> Any:
        return self.tasks.add.send(i, i)

    def get(self, handle: Any, timeout: float) -> Any:
        return handle.get_result(block=True, timeout=int(timeout * 1000))


class Dramatiq8(Dramatiq):
    name = "dramatiq8"
    threads = 8


SYSTEMS: dict[str, type[System]] = {
    s.name: s for s in (Runner, RunnerEvents, RunnerSigned, RunnerSentinel, RunnerWait, Huey,
                        Celery, Dramatiq, Dramatiq8)}

#: how the report names each system, in full and in the header of runner's ratio to it
LABELS = {"runner": "runner", "runnerE": "runner -E", "runner-auth": "runner signed",
          "runner-sentinel": "runner sentinel", "runner-wait": "runner wait_for_replicas 1",
          "huey": "huey", "celery": "celery", "dramatiq": "dramatiq 2x1",
          "dramatiq8": "dramatiq 2x8"}
SHORT = {**LABELS, "runnerE": "r-E", "runner-auth": "signed", "runner-sentinel": "sentinel",
         "runner-wait": "wait1", "dramatiq": "dq2x1", "dramatiq8": "dq2x8"}
