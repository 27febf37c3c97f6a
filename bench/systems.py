"""The systems compared, behind one small interface: send, wait, count stored results, and
the command that starts a worker with 2 processes.

Each system's task module lives in ``bench/apps`` and reads the path of its SQLite file(s) from
``BENCH_DB`` (and ``BENCH_RESULTS_DB``), so the client here and the worker process use the same
files. Stored results are counted with a plain read-only ``sqlite3`` query on the system's own
table: in WAL mode the reader blocks no writer, so counting does not slow the drain.
"""

from __future__ import annotations

import importlib
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

APPS = Path(__file__).resolve().parent / "apps"


class System:
    """One task queue under test, with its files in ``workdir``."""

    name = ""
    module = ""  # the task module in bench/apps

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.db = workdir / f"{self.name}.db"
        self.tasks: Any = None

    def env(self) -> dict[str, str]:
        """Environment of the client (this process) and of the worker."""
        path = os.pathsep.join([str(APPS), os.environ.get("PYTHONPATH", "")])
        return {"BENCH_DB": str(self.db), "PYTHONPATH": path}

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
        """How many successful results are stored now."""
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
        url = f"sqlite:///{self.db}"  # the env settings would win over the app's: set them too
        return {**super().env(), "RUNNER_BROKER_URL": url, "RUNNER_RESULT_BACKEND": url}

    def worker_command(self) -> list[str]:
        return [sys.executable, "-m", "runner", "worker", "-A", self.module, "-c", "2",
                "-P", "prefork", "-l", "warning", "--quiet"]

    def send(self, i: int) -> Any:
        return self.tasks.add.delay(i, i)

    def get(self, handle: Any, timeout: float) -> Any:
        return handle.get(timeout=timeout)

    def stored(self) -> int:
        return self._count(self.db, "SELECT count(*) FROM runner_results WHERE state = ?",
                           "SUCCESS")

    def bulk_send(self, count: int) -> None:
        app = self.tasks.app
        app.broker.enqueue([app.build_message("benchtasks.add", (i, i)) for i in range(count)])


class Huey(System):
    name = "huey"
    module = "hueytasks"

    def worker_command(self) -> list[str]:
        # huey_consumer.py with 2 worker processes; polling delays are Huey's defaults
        return [sys.executable, "-m", "huey.bin.huey_consumer", f"{self.module}.huey",
                "-w", "2", "-k", "process", "-q"]

    def send(self, i: int) -> Any:
        return self.tasks.add(i, i)

    def get(self, handle: Any, timeout: float) -> Any:
        return handle.get(blocking=True, timeout=timeout)

    def stored(self) -> int:
        return self._count(self.db, "SELECT count(*) FROM kv WHERE queue = ?", "bench")


class Celery(System):
    name = "celery"
    module = "celerytasks"

    def __init__(self, workdir: Path):
        super().__init__(workdir)
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

    def stored(self) -> int:
        return self._count(self.results_db,
                           "SELECT count(*) FROM celery_taskmeta WHERE status = ?", "SUCCESS")


SYSTEMS: dict[str, type[System]] = {s.name: s for s in (Runner, Huey, Celery)}
