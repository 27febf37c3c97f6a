"""``sqlite:///path/to.db``: results in the same kind of file as the embedded broker.

By default broker and backend share ``.runner/runner.db``. Records carry an ``expires_at``
(from ``result_expires``); an expired record reads as PENDING and is deleted by ``cleanup``,
which workers call now and then.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from runner.backends.base import ResultBackend, ResultRecord
from runner.config.urls import URL
from runner.exceptions import BackendError
from runner.stores.sqlite import (
    ChangeWatcher,
    connect,
    reclaim_space,
    sqlite_path,
    transaction,
    writing,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS runner_results (
    task_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    content_type TEXT NOT NULL,
    payload BLOB,
    traceback TEXT,
    date_done REAL,
    meta TEXT,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS runner_results_expiry ON runner_results (expires_at);
CREATE TABLE IF NOT EXISTS runner_data (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runner_sets (
    key TEXT NOT NULL,
    member TEXT NOT NULL,
    PRIMARY KEY (key, member)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runner_revoked (
    task_id TEXT PRIMARY KEY,
    terminate INTEGER NOT NULL,
    signal TEXT NOT NULL,
    revoked_at REAL NOT NULL
);
"""

UPSERT = """
INSERT OR REPLACE INTO runner_results
    (task_id, state, content_type, payload, traceback, date_done, meta, expires_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""

SELECT = ("SELECT state, content_type, payload, traceback, date_done, meta, expires_at "
          "FROM runner_results WHERE task_id = ?")

#: revoked ids are forgotten after this long when result_expires is not set
REVOKED_KEEP = 86_400.0


class SQLiteBackend(ResultBackend):
    scheme = "sqlite"

    def __init__(self, url: URL, expires: float | None = None,
                 transport_options: dict | None = None):
        super().__init__(url, expires, transport_options)
        self.path = sqlite_path(url)
        self._lock = threading.Lock()
        try:
            self._conn = connect(self.path, SCHEMA)
        except Exception as exc:
            raise BackendError(f"cannot open SQLite result backend {self.path!r}: {exc}") from exc
        interval = float(self.transport_options.get("result_polling_interval")
                         or self.default_interval)
        self._watcher = ChangeWatcher(self._conn, interval, self._lock)

    def store(self, records: Sequence[ResultRecord]) -> None:
        with self._lock:
            if len(records) == 1:
                with writing(self._conn):
                    self._conn.execute(UPSERT, self._row(records[0]))
            else:
                with transaction(self._conn):
                    self.write_rows(self._conn, records)

    def shares_store_with(self, broker_url: URL, broker_options: Mapping | None = None) -> bool:
        return broker_url.scheme == "sqlite" and sqlite_path(broker_url) == self.path

    def write_rows(self, conn, records: Sequence[ResultRecord]) -> None:
        """Write records on ``conn``, inside the caller's transaction (the SQLite broker uses
        this to store results and ack their messages in one commit)."""
        conn.executemany(UPSERT, [self._row(r) for r in records])

    def _row(self, r: ResultRecord) -> tuple:
        done = r.date_done
        expires_at = (done + self.expires) if (done is not None and self.expires) else None
        meta = json.dumps(r.meta, default=str) if r.meta else None
        return (r.task_id, r.state, r.content_type, r.payload, r.traceback, done, meta,
                expires_at)

    def get(self, task_id: str) -> ResultRecord | None:
        with self._lock:
            row = self._conn.execute(SELECT, (task_id,)).fetchone()
        if row is None:
            return None
        state, content_type, payload, tb, done, meta, expires_at = row
        if expires_at is not None and expires_at <= time.time():
            return None
        return ResultRecord(task_id, state, content_type, payload, tb, done,
                            json.loads(meta) if meta else {})

    def wait(self, task_id: str, timeout: float | None, interval: float | None = None
             ) -> ResultRecord | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.get(task_id)
            if record is not None and record.ready:
                return record
            remaining = 3600.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return record
            self._watcher.wait(remaining, interval)

    def forget(self, task_id: str) -> None:
        with self._lock, writing(self._conn):
            self._conn.execute("DELETE FROM runner_results WHERE task_id = ?", (task_id,))

    def revoke(self, task_ids: Sequence[str], terminate: bool = False,
               signal: str = "SIGTERM") -> None:
        now = time.time()
        with self._lock, transaction(self._conn):
            self._conn.executemany(
                "INSERT OR REPLACE INTO runner_revoked VALUES (?, ?, ?, ?)",
                [(task_id, int(terminate), signal, now) for task_id in task_ids])

    def revoked(self, task_ids: Sequence[str]) -> dict[str, tuple[bool, str]]:
        if not task_ids:
            return {}
        with self._lock:
            if not self._conn.execute("SELECT 1 FROM runner_revoked LIMIT 1").fetchone():
                return {}
            marks = ",".join("?" * len(task_ids))
            rows = self._conn.execute(
                f"SELECT task_id, terminate, signal FROM runner_revoked "
                f"WHERE task_id IN ({marks})", list(task_ids)).fetchall()
        return {task_id: (bool(term), sig) for task_id, term, sig in rows}

    def get_data(self, key: str) -> bytes | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM runner_data WHERE key = ?",
                                     (key,)).fetchone()
        return row[0] if row else None

    def update_data(self, key: str, change: Callable[[bytes | None], bytes | None]
                    ) -> bytes | None:
        # BEGIN IMMEDIATE takes the write lock first: the read and the write are one step, and
        # `change` runs exactly once.
        with self._lock, transaction(self._conn):
            row = self._conn.execute("SELECT value FROM runner_data WHERE key = ?",
                                     (key,)).fetchone()
            new = change(row[0] if row else None)
            if new is None:
                self._conn.execute("DELETE FROM runner_data WHERE key = ?", (key,))
            else:
                self._conn.execute("INSERT OR REPLACE INTO runner_data VALUES (?, ?, ?)",
                                   (key, new, time.time()))
        return new

    def add_to_set(self, key: str, member: str) -> tuple[bool, int]:
        return self.add_to_sets([(key, member)])[0]

    def add_to_sets(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[bool, int]]:
        out = []
        with self._lock, transaction(self._conn):
            for key, member in pairs:
                added = self._conn.execute("INSERT OR IGNORE INTO runner_sets VALUES (?, ?)",
                                           (key, member)).rowcount == 1
                size = self._conn.execute("SELECT count(*) FROM runner_sets WHERE key = ?",
                                          (key,)).fetchone()[0]
                out.append((added, size))
        return out

    def chord_part_done(self, group_id: str, member: str) -> tuple[bool, int, int | None]:
        return self.chord_parts_done([(group_id, member)])[0]

    def chord_parts_done(self, parts: Sequence[tuple[str, str]]
                         ) -> list[tuple[bool, int, int | None]]:
        out = []
        with self._lock, transaction(self._conn):
            for group_id, member in parts:
                key = f"chord:{group_id}"
                added = self._conn.execute("INSERT OR IGNORE INTO runner_sets VALUES (?, ?)",
                                           (key, member)).rowcount == 1
                count = self._conn.execute("SELECT count(*) FROM runner_sets WHERE key = ?",
                                           (key,)).fetchone()[0]
                row = self._conn.execute("SELECT value FROM runner_data WHERE key = ?",
                                         (f"chord-size:{group_id}",)).fetchone()
                out.append((added, count, int(row[0]) if row else None))
        return out

    def set_chord_size(self, group_id: str, chord_size: int) -> int:
        with self._lock, transaction(self._conn):
            self._conn.execute("INSERT OR REPLACE INTO runner_data VALUES (?, ?, ?)",
                               (f"chord-size:{group_id}", str(int(chord_size)).encode(),
                                time.time()))
            return self._conn.execute("SELECT count(*) FROM runner_sets WHERE key = ?",
                                      (f"chord:{group_id}",)).fetchone()[0]

    def forget_chord(self, group_id: str) -> None:
        with self._lock, transaction(self._conn):
            self._conn.execute("DELETE FROM runner_sets WHERE key = ?", (f"chord:{group_id}",))
            self._conn.execute("DELETE FROM runner_data WHERE key = ?",
                               (f"chord-size:{group_id}",))

    def chord_members(self, group_id: str) -> list[str]:
        with self._lock:
            return [row[0] for row in self._conn.execute(
                "SELECT member FROM runner_sets WHERE key = ?", (f"chord:{group_id}",))]

    def set_size(self, key: str) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM runner_sets WHERE key = ?",
                                      (key,)).fetchone()[0]

    def scan_data(self, prefix: str) -> list[tuple[str, bytes]]:
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1) if prefix else "\uffff"
        with self._lock:
            return self._conn.execute(
                "SELECT key, value FROM runner_data WHERE key >= ? AND key < ? ORDER BY key",
                (prefix, upper)).fetchall()

    def cleanup(self) -> int:
        now = time.time()
        with self._lock, transaction(self._conn):
            count = self._conn.execute(
                "DELETE FROM runner_results WHERE expires_at IS NOT NULL AND expires_at <= ?",
                (now,)).rowcount
            self._conn.execute("DELETE FROM runner_revoked WHERE revoked_at <= ?",
                               (now - (self.expires or REVOKED_KEEP),))
        with self._lock:
            reclaim_space(self._conn)
        return count

    def close(self) -> None:
        with self._lock:
            self._conn.close()
