"""What the SQLite broker and result backend share: opening the file, and waiting for change.

Both default to one file, ``.runner/runner.db``, in WAL mode: readers never block the writer, and
several producer and worker processes use it at once. Each process (and thread) opens its own
connection. Waiting is done by watching ``PRAGMA data_version``, which changes when another
connection commits. On Linux a waiter reads it again each time the WAL file is written (inotify:
an idle waiter costs nothing and wakes at once); elsewhere it polls every few milliseconds, and
every millisecond while work keeps coming.

Writers queue on a kernel lock (``flock`` on ``<file>-lock``) before they take SQLite's: when
the file is busy, SQLite's own busy handler sleeps a millisecond or more per retry, which
would leave worker processes idle most of the time; a blocked ``flock`` wakes as soon as the
writer before it commits.

Space: a new file is created with ``auto_vacuum = INCREMENTAL``, and :func:`reclaim_space` gives
the pages of deleted messages and results back (then truncates the WAL) once enough are free;
``journal_size_limit`` cuts the WAL back after a large transaction. Truncating the WAL keeps its
inode, so the waiters' inotify watch on it still sees every later write.
"""

from __future__ import annotations

import fcntl
import math
import os
import re
import select
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable

from runner.config.urls import URL
from runner.stores.file_events import drain, watch_writes
from runner.stores.sqlite_fork import GUARD as FORK_GUARD

BUSY_TIMEOUT_MS = 30_000
WAL_SIZE_LIMIT = 4 * 2**20  # bytes a WAL file is cut back to after a large transaction
RECLAIM_PAGES = 256  # free pages (1 MiB at the default page size) worth giving back


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
    """A connection that also holds a descriptor of the file's write lock (see module doc),
    and one that tells of writes to its WAL file, once a :class:`ChangeWatcher` waited."""

    path = ""  # absolute: a wait after a chdir watches the same file
    lock_fd = -1
    events_fd: int | None = -1  # -1: not opened yet; None: this system cannot watch the file
    reclaimable = False  # the file has auto_vacuum=INCREMENTAL (see reclaim_space)

    def own(self, fd: int) -> int:
        """Close ``fd`` with this connection, or when it is freed unclosed (sqlite3 does not
        call :meth:`close` then: a thread's connection would leak it)."""
        self._finalizers = [*getattr(self, "_finalizers", ()),
                            weakref.finalize(self, os.close, fd)]
        return fd

    def close(self) -> None:
        super().close()
        for finalizer in getattr(self, "_finalizers", ()):
            finalizer()  # (once: a finalizer runs at most once)
        self.lock_fd, self.events_fd = -1, None

    def wal_events(self) -> int | None:
        """The descriptor readable after any process wrote the WAL file (every commit does);
        None where that cannot be watched (the caller polls)."""
        if self.events_fd == -1:
            fd = watch_writes(f"{self.path}-wal")
            self.events_fd = None if fd is None else self.own(fd)
        return self.events_fd


def connect(path: str, schema: str = "") -> Connection:
    """Open ``path`` (creating its folder) in autocommit mode with WAL and a long busy timeout,
    and create ``schema`` (``CREATE ... IF NOT EXISTS``) in it.

    The setup (WAL switch, tables) runs under the file's write lock: processes creating a new
    file at the same moment otherwise meet SQLite locks its busy handler does not wait for
    ("database is locked"). A new file gets ``auto_vacuum = INCREMENTAL`` (it can only be set
    before the first table) so that :func:`reclaim_space` can give freed pages back."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False, factory=Connection)
    conn.path = os.path.abspath(path)
    conn.lock_fd = conn.own(os.open(f"{path}-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644))
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    with writing(conn):
        if conn.execute("PRAGMA page_count").fetchone()[0] == 0:  # a new file (setting it
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # again would be a commit)
        # Only what is missing is written: a file already set up is only read here, so an
        # opening connection never waits on SQLite's own lock (up to the busy timeout) while
        # it holds the write lock other processes queue on.
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if mode.lower() != "wal":
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":  # pragma: no cover - a filesystem without shared memory
            raise sqlite3.OperationalError(f"cannot use WAL mode for {path} (got {mode})")
        if schema and not _has_schema(conn, schema):
            conn.executescript(schema)
        conn.reclaimable = conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    # NORMAL in WAL mode: a commit survives a process crash; only a power cut may lose the
    # last transactions, never corrupt the file.
    conn.execute("PRAGMA synchronous = NORMAL")
    # the WAL grows to the size of the largest transaction; cut it back when it is reset
    conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
    return conn


_SCHEMA_NAMES = re.compile(r"CREATE\s+(?:TABLE|INDEX)\s+IF\s+NOT\s+EXISTS\s+(\w+)", re.I)


def _has_schema(conn: Connection, schema: str) -> bool:
    """Whether every table and index ``schema`` creates is there already (one read)."""
    wanted = set(_SCHEMA_NAMES.findall(schema))
    have = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    return wanted <= have


def reclaim_space(conn: Connection) -> bool:
    """Give free pages back to the file system when at least ``RECLAIM_PAGES`` piled up (a
    drained queue, expired results), and truncate the WAL: the file does not keep the size of
    its fullest moment. One ``PRAGMA freelist_count`` read when there is little to give back;
    callers call it now and then, not on every delete. Returns whether it reclaimed."""
    if not conn.reclaimable or \
            conn.execute("PRAGMA freelist_count").fetchone()[0] < RECLAIM_PAGES:
        return False  # (a file made before auto_vacuum was set keeps its size: VACUUM it)
    with writing(conn):  # (writers hold the lock: the checkpoint waits for readers only)
        # (executescript steps it to the end: execute() would free one page per call)
        conn.executescript("PRAGMA incremental_vacuum;")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return True


class ChangeWatcher:
    """Blocks until another connection commits to the database, or a timeout passes.

    On Linux it sleeps until the WAL file is written (see :mod:`runner.stores.file_events`): no cost
    while idle, and it wakes at once. One thread at a time waits so (another would miss the
    events the first one reads); the others, and systems without inotify, check every
    ``interval`` seconds while idle, and every millisecond for a couple of seconds after a
    change: busy queues get low latency, idle ones cost little."""

    FAST_INTERVAL = 0.001
    FAST_FOR = 2.0  # seconds after a change during which checks are fast
    WATCHED_CHECK = 1.0  # seconds: a watched waiter still checks this often (a missed event)
    COMMIT_SHOWS_WITHIN = 0.05  # seconds from a write of the WAL file to its commit showing
    WRITER_PAUSE = 0.5  # seconds: how long after a write a late commit is still looked for

    def __init__(self, conn: Connection, interval: float, lock: threading.Lock):
        self._conn = conn
        self._interval = interval
        self._lock = lock
        self._watching = threading.Lock()  # held by the thread that waits on the WAL events
        self._opened_at = self._read()  # the version a thread's first wait compares with
        self._seen = threading.local()  # .version: the last one this thread returned on
        self._changed_at = 0.0
        self._written = 0.0  # when a watching waiter last saw the WAL file written

    def _read(self) -> int:
        with self._lock:
            return self._conn.execute("PRAGMA data_version").fetchone()[0]

    def wait(self, timeout: float, interval: float | None = None) -> bool:
        """Return True when the database changed since this thread's last call (or since
        the connection opened), False on timeout. Each thread keeps its own: a change that
        woke one thread must wake the others too."""
        if not self._watching.acquire(blocking=False):
            return self._until(timeout, self._polling(interval))
        try:
            with self._lock:
                events = self._conn.wal_events()  # (watched before the first read below)
            if events is None:
                return self._until(timeout, self._polling(interval))
            poller = select.poll()  # (select.select fails on descriptors above 1023)
            poller.register(events, select.POLLIN)

            def sleep(now: float, remaining: float) -> None:
                if poller.poll(math.ceil(min(remaining, self._watched_step(now)) * 1000)):
                    drain(events)
                    self._written = time.monotonic()
            return self._until(timeout, sleep)
        finally:
            self._watching.release()

    def _until(self, timeout: float, sleep: Callable[[float, float], None]) -> bool:
        """Check for a change, ``sleep(now, remaining)``, again, until one or the timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if self._changed():
                return True
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                return False
            sleep(now, remaining)

    def _polling(self, interval: float | None) -> Callable[[float, float], None]:
        """Sleeps between checks where the WAL file is not watched."""
        def sleep(now: float, remaining: float) -> None:
            step = interval or (self.FAST_INTERVAL if now - self._changed_at < self.FAST_FOR
                                else self._interval)
            time.sleep(min(step, remaining))
        return sleep

    def _watched_step(self, now: float) -> float:
        """How long a watching waiter sleeps at most. A commit writes the WAL file before it
        shows (in the shared-memory index, which tells nothing), and one write event can stand
        for several commits: so after a write it checks every millisecond, then for a while
        every ``interval`` (a writer paused between the two), then only now and then."""
        since = now - self._written
        if since < self.COMMIT_SHOWS_WITHIN:
            return self.FAST_INTERVAL
        return self._interval if since < self.WRITER_PAUSE else self.WATCHED_CHECK

    def _changed(self) -> bool:
        version = self._read()
        if version == getattr(self._seen, "version", self._opened_at):
            return False
        self._seen.version = version
        self._changed_at = time.monotonic()
        return True


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
        FORK_GUARD.enter()  # (no fork of this process while it writes: see sqlite_fork)
        try:
            fcntl.flock(self._conn.lock_fd, fcntl.LOCK_EX)
        except BaseException:
            FORK_GUARD.exit()
            raise
        if self._begin:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except BaseException:
                fcntl.flock(self._conn.lock_fd, fcntl.LOCK_UN)
                FORK_GUARD.exit()
                raise
        return self._conn

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self._begin:
                self._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            fcntl.flock(self._conn.lock_fd, fcntl.LOCK_UN)
            FORK_GUARD.exit()
