"""The embedded default broker: one SQLite file, no server.

Messages live in ``runner_messages`` until acked. A claim sets ``visible_at`` to a deadline; a
message whose deadline passed is visible again, which is how the task of a killed worker is
delivered again. The live worker renews its claims (:meth:`extend`), so long tasks never run
twice. Delayed messages (countdown/eta) wait in ``runner_schedule`` and are moved to their queue
in one transaction when due, by whichever worker looks first: each is moved exactly once.

Every state change is one SQL statement or one ``BEGIN IMMEDIATE`` transaction. Delivery is at
least once: a worker that dies after running a task but before acking it causes a second run.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence

from runner.brokers.base import Broker, Delivery, QueueCounts
from runner.config.urls import URL
from runner.dead_letters import DeadLetter
from runner.exceptions import BrokerError
from runner.message import Message
from runner.stores.sqlite import (
    ChangeWatcher,
    connect,
    reclaim_space,
    sqlite_path,
    transaction,
    writing,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS runner_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    visible_at REAL NOT NULL DEFAULT 0,
    claimed_by TEXT,
    deliveries INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS runner_messages_order
    ON runner_messages (queue, priority DESC, seq);
CREATE TABLE IF NOT EXISTS runner_schedule (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    eta REAL NOT NULL,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS runner_schedule_eta ON runner_schedule (eta);
CREATE TABLE IF NOT EXISTS runner_dead_letters (
    key TEXT PRIMARY KEY,
    died_at REAL NOT NULL,
    letter BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS runner_dead_letters_at ON runner_dead_letters (died_at);
"""

RECLAIM_CHECK_EVERY = 1000  # deleted messages between looks at the free space (see _freed)

CLAIM = """
UPDATE runner_messages
   SET visible_at = :deadline, claimed_by = :consumer, deliveries = deliveries + 1
 WHERE seq IN (SELECT seq FROM runner_messages
                WHERE queue = :queue AND visible_at <= :now
                ORDER BY priority DESC, seq LIMIT :limit)
RETURNING seq, CAST(priority AS INTEGER), deliveries, CAST(body AS BLOB)
"""

MOVE_DUE = """
INSERT INTO runner_messages (queue, priority, body)
SELECT queue, priority, body FROM runner_schedule WHERE eta <= :now ORDER BY eta, seq
"""


class SQLiteBroker(Broker):
    """``sqlite:///path/to.db``: WAL mode, safe for many producer and worker processes."""

    scheme = "sqlite"
    fanout_class = "runner.brokers.sqlite_fanout:SQLiteFanout"
    #: how often (seconds) a fetch also looks for due delayed messages
    schedule_check_interval = 0.05

    def __init__(self, url: URL, transport_options: dict | None = None):
        super().__init__(url, transport_options)
        self.path = sqlite_path(url)
        self.polling_interval = float(self.transport_options.get("polling_interval", 0.005))
        self._lock = threading.Lock()
        try:
            self._conn = connect(self.path, SCHEMA)
        except Exception as exc:  # sqlite3.Error, OSError
            raise BrokerError(f"cannot open SQLite broker {self.path!r}: {exc}") from exc
        self._watcher = ChangeWatcher(self._conn, self.polling_interval, self._lock)
        self._next_schedule_check = 0.0
        self._rotation = itertools.count()
        self._deleted = 0  # messages deleted since the free space was last looked at

    # -- producing ----------------------------------------------------------------------------

    def enqueue(self, messages: Sequence[Message]) -> None:
        now = time.time()
        ready, delayed = [], []
        for message in messages:
            row = (message.queue, message.priority or 0, self.wire(message))
            if message.eta is not None and message.eta > now:
                delayed.append((message.eta, *row))
            else:
                ready.append(row)
        with self._lock:
            if len(messages) == 1:  # one statement is its own transaction
                with writing(self._conn):
                    self._insert(ready, delayed)
            else:
                with transaction(self._conn):
                    self._insert(ready, delayed)

    def _insert(self, ready: list, delayed: list) -> None:
        if ready:
            self._conn.executemany(
                "INSERT INTO runner_messages (queue, priority, body) VALUES (?, ?, ?)", ready)
        if delayed:
            self._conn.executemany(
                "INSERT INTO runner_schedule (eta, queue, priority, body) VALUES (?, ?, ?, ?)",
                delayed)

    # -- consuming ----------------------------------------------------------------------------

    def fetch(self, queues: Sequence[str], limit: int, consumer: str) -> list[Delivery]:
        now = time.time()
        if now >= self._next_schedule_check:
            self._move_due(now)
            self._next_schedule_check = now + self.schedule_check_interval
        with self._lock:
            if len(queues) == 1:  # one statement is its own transaction
                with writing(self._conn):
                    claimed = self._claim(queues, limit, consumer, now)
            else:
                with transaction(self._conn):
                    claimed = self._claim(queues, limit, consumer, now)
            if not claimed:
                self._freed(0, drained=True)
        return claimed

    def _claim(self, queues: Sequence[str], limit: int, consumer: str, now: float
               ) -> list[Delivery]:
        """Claim up to ``limit`` messages, inside the caller's write."""
        deliveries: list[Delivery] = []
        # Several queues are served in turn, starting with a different one on each fetch, so a
        # busy queue cannot starve the others.
        start = next(self._rotation) % len(queues) if len(queues) > 1 else 0
        for queue in list(queues[start:]) + list(queues[:start]):
            want = limit - len(deliveries)
            if want <= 0:
                break
            rows = self._conn.execute(CLAIM, {
                "deadline": now + self.visibility_timeout, "consumer": consumer,
                "queue": queue, "now": now, "limit": want}).fetchall()
            rows.sort(key=lambda r: (-r[1], r[0]))
            deliveries += [Delivery(tag=seq, body=body, queue=queue, redelivered=count > 1,
                                    deliveries=count) for seq, _, count, body in rows]
        return deliveries

    def _move_due(self, now: float) -> None:
        with self._lock:
            due = self._conn.execute(
                "SELECT 1 FROM runner_schedule WHERE eta <= ? LIMIT 1", (now,)).fetchone()
            if not due:
                return
            with transaction(self._conn):
                self._conn.execute(MOVE_DUE, {"now": now})
                self._conn.execute("DELETE FROM runner_schedule WHERE eta <= ?", (now,))

    def wait(self, timeout: float) -> bool:
        return self._watcher.wait(timeout)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        with self._lock:
            self._many("DELETE FROM runner_messages WHERE seq = ?", deliveries)
            self._freed(len(deliveries))

    def requeue(self, deliveries: Sequence[Delivery], started: bool = False) -> None:
        if not deliveries:
            return
        uncount = "" if started else ", deliveries = max(0, deliveries - 1)"
        with self._lock:
            self._many(f"UPDATE runner_messages SET visible_at = 0, claimed_by = NULL{uncount} "
                       "WHERE seq = ?", deliveries)

    def extend(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        deadline = time.time() + self.visibility_timeout
        with self._lock:
            self._many(f"UPDATE runner_messages SET visible_at = {deadline!r} WHERE seq = ?",
                       deliveries)

    def retry(self, delivery: Delivery, message: Message) -> None:
        with self._lock, transaction(self._conn):
            self._conn.execute("DELETE FROM runner_messages WHERE seq = ?", (delivery.tag,))
            row = (message.queue, message.priority or 0, self.wire(message))
            if message.eta is not None and message.eta > time.time():
                self._insert([], [(message.eta, *row)])
            else:
                self._insert([row], [])

    def ack_and_store(self, deliveries: Sequence[Delivery], records: Sequence, backend) -> bool:
        if not backend.shares_store_with(self.url):
            return False
        write_rows = backend.write_rows
        with self._lock:
            with transaction(self._conn):
                write_rows(self._conn, records)
                self._conn.executemany("DELETE FROM runner_messages WHERE seq = ?",
                                       [(d.tag,) for d in deliveries])
            self._freed(len(deliveries))
        return True

    def ack_store_fetch(self, deliveries: Sequence[Delivery], records: Sequence, backend,
                        queues: Sequence[str], limit: int, consumer: str
                        ) -> list[Delivery] | None:
        if not backend.shares_store_with(self.url):
            return None
        write_rows = backend.write_rows
        now = time.time()
        if now >= self._next_schedule_check:
            self._move_due(now)
            self._next_schedule_check = now + self.schedule_check_interval
        with self._lock:
            with transaction(self._conn):
                write_rows(self._conn, records)
                self._conn.executemany("DELETE FROM runner_messages WHERE seq = ?",
                                       [(d.tag,) for d in deliveries])
                claimed = self._claim(queues, limit, consumer, now)
            self._freed(len(deliveries), drained=not claimed)
        return claimed

    def _freed(self, count: int, drained: bool = False) -> None:
        """``count`` messages were deleted (the lock held, outside a transaction): every
        RECLAIM_CHECK_EVERY of them, or when a queue is ``drained`` after deletes, see whether
        the space they took is worth giving back (one cheap read when it is not)."""
        self._deleted += count
        if self._deleted >= RECLAIM_CHECK_EVERY or (drained and self._deleted):
            self._deleted = 0
            reclaim_space(self._conn)

    def _many(self, sql: str, deliveries: Sequence[Delivery]) -> None:
        params = [(d.tag,) for d in deliveries]
        if len(params) == 1:
            with writing(self._conn):
                self._conn.execute(sql, params[0])
        else:
            with transaction(self._conn):
                self._conn.executemany(sql, params)

    # -- admin --------------------------------------------------------------------------------

    def purge(self, queues: Sequence[str]) -> int:
        marks = ",".join("?" * len(queues))
        with self._lock, transaction(self._conn):
            count = self._conn.execute(
                f"DELETE FROM runner_messages WHERE queue IN ({marks}) AND visible_at <= ?",
                [*queues, time.time()]).rowcount
            count += self._conn.execute(
                f"DELETE FROM runner_schedule WHERE queue IN ({marks})", list(queues)).rowcount
        with self._lock:
            self._freed(count, drained=True)
        return count

    def qsize(self, queue: str) -> int:
        now = time.time()
        with self._lock:
            ready = self._conn.execute(
                "SELECT count(*) FROM runner_messages WHERE queue = ? AND visible_at <= ?",
                (queue, now)).fetchone()[0]
            delayed = self._conn.execute(
                "SELECT count(*) FROM runner_schedule WHERE queue = ?", (queue,)).fetchone()[0]
        return ready + delayed

    def queue_counts(self, queues: Sequence[str]) -> dict[str, QueueCounts]:
        now, counts = time.time(), {q: QueueCounts(0, 0, 0) for q in queues}
        with self._lock:
            rows = self._conn.execute(
                "SELECT queue, sum(visible_at <= ?), sum(visible_at > ?) FROM runner_messages "
                "GROUP BY queue", (now, now)).fetchall()
            delayed = self._conn.execute(
                "SELECT queue, count(*) FROM runner_schedule GROUP BY queue").fetchall()
        for queue, ready, claimed in rows:
            if queue in counts:
                counts[queue].waiting, counts[queue].unacked = ready, claimed
        for queue, count in delayed:
            if queue in counts:
                counts[queue].delayed = count
        return counts

    def queue_names(self) -> list[str]:
        with self._lock:
            rows = self._conn.execute("SELECT DISTINCT queue FROM runner_messages UNION "
                                      "SELECT DISTINCT queue FROM runner_schedule").fetchall()
        return sorted(row[0] for row in rows)

    # -- dead letters -------------------------------------------------------------------------

    def bury(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        with self._lock, transaction(self._conn):
            self._conn.executemany(
                "INSERT OR REPLACE INTO runner_dead_letters (key, died_at, letter) "
                "VALUES (?, ?, ?)", [(d.key, d.died_at, d.encode()) for d in letters])

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT letter FROM runner_dead_letters ORDER BY died_at DESC, key LIMIT ?",
                (limit,)).fetchall()
        return [DeadLetter.decode(row[0]) for row in rows]

    def dead_letter_count(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM runner_dead_letters").fetchone()[0]

    def remove_dead(self, keys: Sequence[str] | None = None) -> int:
        with self._lock, transaction(self._conn):
            if keys is None:
                return self._conn.execute("DELETE FROM runner_dead_letters").rowcount
            return sum(self._conn.execute("DELETE FROM runner_dead_letters WHERE key = ?",
                                          (key,)).rowcount for key in keys)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
