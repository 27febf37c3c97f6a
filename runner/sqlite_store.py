"""What the SQLite broker and result backend share: opening the file, and waiting for change.

Both default to one file, ``.runner/runner.db``, in WAL mode: readers never block the writer, and
several producer and worker processes use it at once. Each process (and thread) opens its own
connection. Waiting is done by watching ``PRAGMA data_version``, which changes when another
connection commits: a check costs a few microseconds, so an idle waiter polls it every few
milliseconds for well under 1 % of a core, and wakes within one interval of new work (within
a millisecond while work keeps coming).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time

from runner.config.urls import URL

BUSY_TIMEOUT_MS = 30_000


def sqlite_path(url: URL) -> str:
    """``sqlite:///rel/path.db`` is relative to the working directory, ``sqlite:////abs.db``
    absolute, as in SQLAlchemy."""
    raw = url.raw
    rest = raw.split("://", 1)[1] if "://" in raw else raw
    rest = rest.split("?", 1)[0]
    if rest.startswith("//"):
        return rest[1:]
    return rest.lstrip("/") or ".runner/runner.db"


def connect(path: str) -> sqlite3.Connection:
    """Open ``path`` (creating its folder) in autocommit mode with WAL and a long busy timeout."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode.lower() != "wal":  # pragma: no cover - a filesystem without shared memory
        raise sqlite3.OperationalError(f"cannot use WAL mode for {path} (got {mode})")
    # NORMAL in WAL mode: a commit survives a process crash; only a power cut may lose the
    # last transactions, never corrupt the file.
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


class ChangeWatcher:
    """Blocks until another connection commits to the database, or a timeout passes.

    It checks every ``interval`` seconds while idle, and every millisecond for a couple of
    seconds after a change: busy queues get low latency, idle ones cost almost nothing."""

    FAST_INTERVAL = 0.001
    FAST_FOR = 2.0  # seconds after a change during which checks are fast

    def __init__(self, conn: sqlite3.Connection, interval: float, lock: threading.Lock):
        self._conn = conn
        self._interval = interval
        self._lock = lock
        self._version = self._read()
        self._changed_at = 0.0

    def _read(self) -> int:
        with self._lock:
            return self._conn.execute("PRAGMA data_version").fetchone()[0]

    def wait(self, timeout: float, interval: float | None = None) -> bool:
        """Return True when the database changed since the last call, False on timeout."""
        now = time.monotonic()
        deadline = now + timeout
        while True:
            version = self._read()
            if version != self._version:
                self._version = version
                self._changed_at = time.monotonic()
                return True
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                return False
            step = interval or (self.FAST_INTERVAL if now - self._changed_at < self.FAST_FOR
                                else self._interval)
            time.sleep(min(step, remaining))


def transaction(conn: sqlite3.Connection):
    """``with transaction(conn):`` runs the block in one ``BEGIN IMMEDIATE`` transaction."""
    return _Transaction(conn)


class _Transaction:
    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self._conn.execute("BEGIN IMMEDIATE")
        return self._conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._conn.execute("COMMIT")
        else:
            self._conn.execute("ROLLBACK")
