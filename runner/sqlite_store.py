"""What the SQLite broker and result backend share: opening the file, and waiting for change.

Both default to one file, ``.runner/runner.db``, in WAL mode: readers never block the writer, and
several producer and worker processes use it at once. Each process (and thread) opens its own
connection. Waiting is done by watching ``PRAGMA data_version``, which changes when another
connection commits: a check costs a few microseconds, so an idle waiter polls it every few
milliseconds for well under 1 % of a core, and wakes within one interval of new work (within
a millisecond while work keeps coming).

Writers queue on a kernel lock (``flock`` on ``<file>-lock``) before they take SQLite's: when
the file is busy, SQLite's own busy handler sleeps a millisecond or more per retry, which
would leave worker processes idle most of the time; a blocked ``flock`` wakes as soon as the
writer before it commits.
"""

from __future__ import annotations

import fcntl
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


class Connection(sqlite3.Connection):
    """A connection that also holds a descriptor of the file's write lock (see module doc)."""

    lock_fd = -1

    def close(self) -> None:
        super().close()
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


def connect(path: str) -> Connection:
    """Open ``path`` (creating its folder) in autocommit mode with WAL and a long busy timeout."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False, factory=Connection)
    conn.lock_fd = os.open(f"{path}-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
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


def transaction(conn: Connection):
    """``with transaction(conn):`` runs the block in one ``BEGIN IMMEDIATE`` transaction,
    holding the write lock."""
    return _Transaction(conn, begin=True)


def writing(conn: Connection):
    """``with writing(conn):`` holds the write lock for one statement (its own transaction)."""
    return _Transaction(conn, begin=False)


class _Transaction:
    __slots__ = ("_conn", "_begin")

    def __init__(self, conn: Connection, begin: bool):
        self._conn = conn
        self._begin = begin

    def __enter__(self) -> Connection:
        fcntl.flock(self._conn.lock_fd, fcntl.LOCK_EX)
        if self._begin:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except BaseException:
                fcntl.flock(self._conn.lock_fd, fcntl.LOCK_UN)
                raise
        return self._conn

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self._begin:
                self._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            fcntl.flock(self._conn.lock_fd, fcntl.LOCK_UN)
