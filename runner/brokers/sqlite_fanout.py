"""``sqlite://`` fan-out: two tables in a file beside the broker's (``<file>.fanout``).

A file of its own, so that control messages and events never take the broker file's write
lock nor wake its waiting workers (each commit there is a change they look at).

- ``runner_fanout``: one row per published body; a subscriber remembers the last ``seq`` it
  read (starting at the newest when it subscribes) and polls every ``POLL`` seconds.
- ``runner_replies``: rows for a reply box's ``address``, deleted as they are read.

Bounded: each row carries its expiry (``ttl``), and a publisher now and then deletes expired
rows and all but the newest ``MAX_ROWS``. A subscriber that falls behind loses the oldest.
"""

from __future__ import annotations

import os
import threading
import time

from runner.brokers.fanout import DEFAULT_TTL, MAX_ROWS, Fanout, ReplyBox, Subscription
from runner.config.urls import URL
from runner.exceptions import BrokerError
from runner.stores.sqlite import connect, sqlite_path, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS runner_fanout (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    exchange TEXT NOT NULL,
    expires_at REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS runner_replies (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    address TEXT NOT NULL,
    expires_at REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS runner_replies_address ON runner_replies (address);
"""

POLL = 0.05  # seconds between two looks of a waiting reader
TRIM_EVERY = 2.0  # seconds between two clean-ups by one publisher


def fanout_path(broker_path: str) -> str:
    return broker_path + ".fanout"


class _Poller:
    def __init__(self, fanout: SQLiteFanout):
        self.fanout = fanout

    def _poll(self, read, timeout: float) -> list[bytes]:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            got = read()
            if got or time.monotonic() >= deadline:
                return got
            time.sleep(min(POLL, max(0.0, deadline - time.monotonic())))


class _SQLiteSubscription(_Poller, Subscription):
    def __init__(self, fanout: SQLiteFanout, exchange: str):
        super().__init__(fanout)
        self.exchange = exchange
        with fanout.lock:
            row = fanout.conn.execute("SELECT max(seq) FROM runner_fanout").fetchone()
        self.last = row[0] or 0

    def _read(self) -> list[bytes]:
        with self.fanout.lock:
            rows = self.fanout.conn.execute(
                "SELECT seq, expires_at, body FROM runner_fanout WHERE seq > ? AND exchange = ? "
                "ORDER BY seq LIMIT 5000", (self.last, self.exchange)).fetchall()
        if not rows:
            return []
        self.last = rows[-1][0]
        now = time.time()
        return [bytes(body) for _, expires_at, body in rows if expires_at >= now]

    def get(self, timeout: float) -> list[bytes]:
        return self._poll(self._read, timeout)


class _SQLiteReplyBox(_Poller, ReplyBox):
    def __init__(self, fanout: SQLiteFanout):
        super().__init__(fanout)
        self.address = os.urandom(12).hex()

    def _read(self) -> list[bytes]:
        conn = self.fanout.conn
        with self.fanout.lock:
            rows = conn.execute("SELECT seq, body FROM runner_replies WHERE address = ? "
                                "ORDER BY seq", (self.address,)).fetchall()
            if rows:
                with transaction(conn):
                    conn.execute("DELETE FROM runner_replies WHERE address = ? AND seq <= ?",
                                 (self.address, rows[-1][0]))
        return [bytes(body) for _, body in rows]

    def get(self, timeout: float) -> list[bytes]:
        return self._poll(self._read, timeout)

    def close(self) -> None:
        with self.fanout.lock, transaction(self.fanout.conn):
            self.fanout.conn.execute("DELETE FROM runner_replies WHERE address = ?",
                                     (self.address,))


class SQLiteFanout(Fanout):
    def __init__(self, url: URL, transport_options: dict | None = None):
        super().__init__(url, transport_options)
        self.path = fanout_path(sqlite_path(url))
        self.lock = threading.Lock()
        try:
            self.conn = connect(self.path, SCHEMA)
        except Exception as exc:  # sqlite3.Error, OSError
            raise BrokerError(f"cannot open SQLite file {self.path!r} (control and events): "
                              f"{exc}") from exc
        self._next_trim = 0.0

    def _insert(self, table: str, key: str, body: bytes, ttl: float) -> None:
        column = "exchange" if table == "runner_fanout" else "address"
        now = time.time()
        with self.lock, transaction(self.conn):
            self.conn.execute(f"INSERT INTO {table} ({column}, expires_at, body) "
                              f"VALUES (?, ?, ?)", (key, now + ttl, body))
            if time.monotonic() >= self._next_trim:
                self._next_trim = time.monotonic() + TRIM_EVERY
                for name in ("runner_fanout", "runner_replies"):
                    self.conn.execute(f"DELETE FROM {name} WHERE expires_at < ?", (now,))
                    self.conn.execute(f"DELETE FROM {name} WHERE seq <= "
                                      f"(SELECT max(seq) FROM {name}) - ?", (MAX_ROWS,))

    def publish(self, exchange: str, body: bytes, ttl: float = DEFAULT_TTL) -> None:
        self._insert("runner_fanout", exchange, body, ttl)

    def subscribe(self, exchange: str, ttl: float = DEFAULT_TTL,
                  expires: float | None = None) -> Subscription:
        return _SQLiteSubscription(self, exchange)

    def reply_box(self) -> ReplyBox:
        return _SQLiteReplyBox(self)

    def reply(self, address: str, body: bytes, ttl: float = DEFAULT_TTL) -> None:
        self._insert("runner_replies", address, body, max(ttl, 60.0))

    def close(self) -> None:
        with self.lock:
            self.conn.close()
