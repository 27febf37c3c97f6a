"""What the dashboard tests share, once per module (a worker and a server take seconds to
start): a SQLite broker and backend in a folder of the module, a real ``runner worker`` of
``tests/apps/pipeline_tasks.py`` sending task events, and a real dashboard server (uvicorn in
a thread of the test process) on a free port. ``Harness.url(path)`` and ``Harness.http``."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import APPS, ROOT, WorkerProcess


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], object], timeout: float = 20.0, what: str = "it"):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {timeout}s")
        time.sleep(0.1)


class Harness:
    def __init__(self, folder: Path, **options):
        import pipeline_tasks

        from runner.dashboard.context import Options
        from runner.dashboard.server import Dashboard

        self.folder = folder
        self.db = f"sqlite:///{folder}/runner.db"
        self.app = pipeline_tasks.app
        runtime = self.app.conf._runtime
        self._saved = dict(runtime.values), dict(runtime.sources)
        self.app.conf.update(broker_url=self.db, result_backend=self.db,
                             task_send_sent_event=True, worker_heartbeat=1.0)
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join([str(APPS), str(ROOT),
                                                  self.env.get("PYTHONPATH", "")])
        self.env.update(RUNNER_BROKER_URL=self.db, RUNNER_RESULT_BACKEND=self.db,
                        RUNNER_WORKER_HEARTBEAT="1")
        self.workers: list[WorkerProcess] = []
        options.setdefault("port", free_port())
        options.setdefault("poll_interval", 0.5)
        options.setdefault("refresh", 0.5)
        self.options = Options(**options)
        self.board = Dashboard(self.app, self.options)
        self.base = self.board.start_in_thread()
        self.http = httpx.Client(base_url=self.base, timeout=30)

    def url(self, path: str) -> str:
        return self.base + path

    def worker(self, *args: str) -> WorkerProcess:
        log = self.folder / f"worker-{len(self.workers)}.log"
        started = WorkerProcess(["-E", *args], self.env, self.folder, log, "pipeline_tasks")
        self.workers.append(started)
        started.wait_for_log("ready.")
        return started

    def seen_worker(self, name: str) -> dict:
        def online():
            for w in self.http.get("/api/workers").json()["workers"]:
                if w["hostname"].startswith(name) and w["status"] == "online" \
                        and w["queues"]:  # (and polled: its pool and queues known)
                    return w
            return None

        return wait_until(online, what=f"worker {name} online on the dashboard")

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.http.close()
        self.board.stop()
        self.app.close()
        runtime = self.app.conf._runtime
        runtime.values, runtime.sources = self._saved
        self.app.conf._invalidate()
