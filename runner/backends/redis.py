"""``redis://`` results: one key per task, with ``result_expires`` as its TTL.

A finished task's record is written and announced (PUBLISH on ``runner:done:<id>``, with the
record itself when it is under ``PUBLISH_RECORD_MAX`` bytes) in one round trip.
``AsyncResult.get`` sends SUBSCRIBE and GET in one write on a RESP3 connection (Redis 6+), then
sleeps until the announcement, which brings the record: waiting costs one round trip, no
polling and no second read. Across a Redis outage it keeps waiting (reconnecting with backoff)
until its own timeout. Keyed data (run records) uses WATCH/MULTI, retried on conflict, with a
sorted-set index for prefix scans; chord parts and mapped pipeline steps are counted in sets
(SADD + SCARD in one MULTI), which never conflict."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import redis

from runner.backends.base import ResultBackend, ResultRecord
from runner.config.urls import URL
from runner.exceptions import BackendError
from runner.reconnect import ConnectPolicy, reached
from runner.stores.redis import (
    OUTAGE_ERRORS,
    REFUSED_ERRORS,
    OwnConnections,
    check_replicas,
    make_client,
    pack,
    refused,
    retrying,
)

logger = logging.getLogger("runner.redis")

REVOKED_KEEP = 86_400  # seconds a revoke is remembered
CHORD_KEEP = 86_400  # seconds a chord's count is kept without result_expires
REVOKED_FRESH = 0.02  # seconds a "nothing was revoked lately" answer is trusted
PUBLISH_RECORD_MAX = 16_384  # bytes: a larger record is announced by its state, then read
_PUSHES = (b"message", b"subscribe", b"unsubscribe")  # RESP3 push replies of pub/sub


class RedisBackend(ResultBackend):
    scheme = "redis"

    def __init__(self, url: URL, expires: float | None = None,
                 transport_options: dict | None = None):
        super().__init__(url, expires, transport_options)
        options = self.transport_options
        self.prefix = str(options.get("global_keyprefix", "runner:"))
        self.policy = ConnectPolicy.from_options(options)
        self.client = make_client(url, options)
        #: results stored return once this many replicas have them (WAIT; see RedisBroker)
        self.wait_for_replicas = int(options.get("wait_for_replicas") or 0)
        self.wait_timeout_ms = int(float(options.get("wait_for_replicas_timeout") or 1.0) * 1000)
        self._local = threading.local()
        self._resp3: redis.Redis | None = None  # for waiting (see _waiter)
        self._own = OwnConnections(self.client)  # for storing (one write per batch)
        self._lately = True  # whether anything was revoked lately (see revoked())
        self._lately_checked_until = 0.0

    def check(self) -> None:
        self._retry("connect", self.client.ping)

    def _key(self, task_id: str) -> str:
        return f"{self.prefix}result:{task_id}"

    def _channel(self, task_id: str) -> str:
        return f"{self.prefix}done:{task_id}"

    def _retry(self, what: str, operation: Callable, deadline: float | None = None):
        return retrying(what, self.url, operation, self.policy, deadline, BackendError)

    # -- records --------------------------------------------------------------------------------

    def store(self, records: Sequence[ResultRecord]) -> None:
        def write() -> None:
            commands = self.store_commands(records)
            for command, reply in zip(commands, self._own.roundtrip(commands), strict=True):
                if isinstance(reply, Exception):
                    raise reply
                check_replicas(command, reply)
        self._retry("store results", write)

    def store_commands(self, records: Sequence[ResultRecord], from_db: int | None = None
                       ) -> list[list]:
        """The commands that store ``records``; with ``from_db`` (they are sent on a
        connection to another database of the same server, e.g. the broker's) they are wrapped
        in SELECTs, so that the broker can store and ack in one round trip."""
        ttl = ["PX", max(1, int(self.expires * 1000))] if self.expires else []
        switch = from_db is not None and from_db != self.db
        commands: list[list] = [["SELECT", self.db]] if switch else []
        for r in records:
            raw = r.encode()
            commands.append(["SET", self._key(r.task_id), raw, *ttl])
            if r.ready:
                commands.append(["PUBLISH", self._channel(r.task_id),
                                 raw if len(raw) <= PUBLISH_RECORD_MAX else r.state])
        if switch:
            commands.append(["SELECT", from_db])
        if self.wait_for_replicas and records:
            commands.append(["WAIT", self.wait_for_replicas, self.wait_timeout_ms])
        return commands

    @property
    def db(self) -> int:
        return self.url.db or 0

    def shares_store_with(self, broker_url: URL, broker_options: Mapping | None = None) -> bool:
        if broker_url.scheme == "sentinel":  # the same Sentinels, the same master: one server
            return self.same_server(broker_url) and (broker_options or {}).get(
                "master_name") == self.transport_options.get("master_name")
        return broker_url.scheme in ("redis", "rediss", "redis+socket") and self.same_server(
            broker_url)

    def same_server(self, url: URL) -> bool:
        """Whether ``url`` names this backend's Redis server (any database); for
        ``sentinel://`` URLs, the same Sentinels (the master name is the caller's to
        compare)."""
        def server(u: URL) -> tuple:
            if u.scheme == "redis+socket":
                where: object = u.path
            elif u.scheme == "sentinel":
                where = tuple((s.host, s.port or 26379) for s in u.all)
            else:
                where = (u.host, u.port or 6379)
            return u.scheme, where, u.username, u.password
        return server(url) == server(self.url)

    def _read(self, task_id: str) -> ResultRecord | None:
        raw = self.client.get(self._key(task_id))
        return ResultRecord.decode(task_id, raw) if raw is not None else None

    def get(self, task_id: str) -> ResultRecord | None:
        return self._retry("get result", lambda: self._read(task_id))

    def get_many(self, task_ids: Sequence[str]) -> dict[str, ResultRecord]:
        if not task_ids:
            return {}
        raws = self._retry("get results",
                           lambda: self.client.mget([self._key(t) for t in task_ids]))
        return {t: ResultRecord.decode(t, raw) for t, raw in zip(task_ids, raws, strict=True)
                if raw is not None}

    def _waiter(self):
        """This thread's connection for waiting: RESP3, so that one write subscribes and
        reads, and the read sees everything stored before the subscription took effect."""
        conn = self._local.__dict__.get("waiter")
        if conn is None:
            if self._resp3 is None:
                self._resp3 = make_client(self.url, self.transport_options, protocol=3)
            conn = self._local.waiter = self._resp3.connection_pool.make_connection()
        return conn

    def wait(self, task_id: str, timeout: float | None, interval: float | None = None
             ) -> ResultRecord | None:
        """Wait for the announcement of the result; across a Redis outage keep trying (once a
        second) until ``timeout`` runs out, instead of failing."""
        if not reached(self.url):
            self.check()  # a Redis never reached: an error within broker_connection_timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return self._wait_once(task_id, deadline)
            except REFUSED_ERRORS as exc:
                raise refused(self.url, "wait for result", exc) from exc
            except OUTAGE_ERRORS as exc:
                self._drop_waiter()
                left = self._left(deadline)
                if left is not None and left <= 0:
                    return None
                logger.warning("waiting for result %s: cannot reach Redis at %s (%s); "
                               "still waiting", task_id, self.url.masked, type(exc).__name__)
                time.sleep(min(1.0, left if left is not None else 1.0))

    def _wait_once(self, task_id: str, deadline: float | None) -> ResultRecord | None:
        """SUBSCRIBE and GET in one round trip (Redis runs them in order: a result stored
        before the subscription is read, one stored after it is announced), then read
        announcements until this task's comes. Replies for earlier waits (their UNSUBSCRIBE,
        a late message) are skipped: pushes name their channel. The last wait's channel is
        unsubscribed in this write, not on the way out of the last wait (a send less there)."""
        conn, channel, key = self._waiter(), self._channel(task_id), self._key(task_id)
        stale = self._local.__dict__.pop("subscribed", None)
        conn.send_packed_command([(pack(["UNSUBSCRIBE", stale]) if stale else b"")
                                  + pack(["SUBSCRIBE", channel]) + pack(["GET", key])],
                                 check_health=False)
        reads = 1  # GET replies still to come on this connection
        record: ResultRecord | None = None
        try:
            while reads or record is None or not record.ready:
                left = self._left(deadline)
                if left is not None and left <= 0:
                    return record
                if not conn.can_read(timeout=left):
                    if deadline is None:  # now and then, in case a message was lost
                        conn.send_packed_command([pack(["GET", key])], check_health=False)
                        reads += 1
                    continue
                reply = conn.read_response(disable_decoding=True, push_request=True)
                if isinstance(reply, list) and reply and reply[0] in _PUSHES:
                    if reply[0] == b"message" and reply[1] == channel.encode():
                        data = reply[2]  # the record, or its state if it is large
                        if data[:1] == b"[":
                            record = ResultRecord.decode(task_id, data)
                        else:
                            conn.send_packed_command([pack(["GET", key])], check_health=False)
                            reads += 1
                    continue
                reads -= 1  # a GET's reply
                if reply is not None:
                    record = ResultRecord.decode(task_id, reply)
            return record
        finally:
            if reads:  # left before a reply came (a timeout): start afresh next time
                self._drop_waiter()
            else:
                self._local.subscribed = channel  # unsubscribed by the next wait's write

    def _drop_waiter(self) -> None:
        conn = self._local.__dict__.pop("waiter", None)
        self._local.__dict__.pop("subscribed", None)
        if conn is not None:
            conn.disconnect()

    @staticmethod
    def _left(deadline: float | None) -> float | None:
        if deadline is None:
            return 1.0  # wake now and then, e.g. to notice a Redis restart
        return max(0.0, deadline - time.monotonic())

    def forget(self, task_id: str) -> None:
        self._retry("forget", lambda: self.client.delete(self._key(task_id)))

    # -- revocation -----------------------------------------------------------------------------

    def revoke(self, task_ids: Sequence[str], terminate: bool = False,
               signal: str = "SIGTERM") -> None:
        def write() -> bool:
            pipe = self.client.pipeline(transaction=False)
            for task_id in task_ids:
                pipe.set(f"{self.prefix}revoked:{task_id}", f"{int(terminate)}|{signal}",
                         ex=REVOKED_KEEP)
            pipe.set(f"{self.prefix}revoked-lately", 1, ex=REVOKED_KEEP, nx=True)
            pipe.expire(f"{self.prefix}revoked-lately", REVOKED_KEEP)
            return pipe.execute()[-2]
        first = self._retry("revoke", write)
        self._lately = True
        if first:  # workers may trust "nothing revoked" for REVOKED_FRESH more: outwait them,
            time.sleep(REVOKED_FRESH)  # so that no task starts once revoke() has returned

    def revoked(self, task_ids: Sequence[str]) -> dict[str, tuple[bool, str]]:
        """Which of ``task_ids`` are revoked. Workers ask for each batch they claim: while
        nothing was revoked for a day (one key says), the answer needs a round trip only every
        REVOKED_FRESH seconds (the first revoke of a day waits that long before it returns)."""
        if not task_ids:
            return {}
        now = time.monotonic()
        if now >= self._lately_checked_until:
            self._lately = bool(self._retry("read revoked", lambda: self.client.exists(
                f"{self.prefix}revoked-lately")))
            self._lately_checked_until = now + REVOKED_FRESH
        if not self._lately:
            return {}
        values = self._retry("read revoked", lambda: self.client.mget(
            [f"{self.prefix}revoked:{t}" for t in task_ids]))
        found = {}
        for task_id, value in zip(task_ids, values, strict=True):
            if value is not None:
                terminate, _, signal = value.decode().partition("|")
                found[task_id] = (terminate == "1", signal or "SIGTERM")
        return found

    # -- keyed data -------------------------------------------------------------------------------

    def get_data(self, key: str) -> bytes | None:
        return self._retry("get data", lambda: self.client.get(f"{self.prefix}data:{key}"))

    def update_data(self, key: str, change: Callable[[bytes | None], bytes | None]
                    ) -> bytes | None:
        name, index = f"{self.prefix}data:{key}", f"{self.prefix}data-index"

        def attempt() -> bytes | None:
            with self.client.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(name)
                        new = change(pipe.get(name))
                        pipe.multi()
                        if new is None:
                            pipe.delete(name)
                            pipe.zrem(index, key)
                        else:
                            pipe.set(name, new)
                            pipe.zadd(index, {key: 0})
                        pipe.execute()
                        return new
                    except redis.WatchError:
                        continue  # someone changed it between our read and write: again
        return self._retry("update data", attempt)

    def add_to_set(self, key: str, member: str) -> tuple[bool, int]:
        return self.add_to_sets([(key, member)])[0]

    def add_to_sets(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[bool, int]]:
        def add() -> list[tuple[bool, int]]:
            pipe = self.client.pipeline(transaction=True)  # MULTI: each SCARD sees its SADD
            for key, member in pairs:
                name = f"{self.prefix}set:{key}"
                pipe.sadd(name, member)
                pipe.scard(name)
                if self.expires:
                    pipe.expire(name, max(1, int(self.expires)))
            replies = pipe.execute()
            step = 3 if self.expires else 2
            return [(bool(replies[i]), int(replies[i + 1]))
                    for i in range(0, len(replies), step)]
        return self._retry("add to sets", add)

    def chord_part_done(self, group_id: str, member: str) -> tuple[bool, int, int | None]:
        return self.chord_parts_done([(group_id, member)])[0]

    def chord_parts_done(self, parts: Sequence[tuple[str, str]]
                         ) -> list[tuple[bool, int, int | None]]:
        """SADD, SCARD and GET of the size for each part, all in one MULTI: one round trip
        for a batch of finished parts, no WATCH, so parts finishing together never retry."""
        keep = max(1, int(self.expires or CHORD_KEEP))

        def add() -> list[tuple[bool, int, int | None]]:
            pipe = self.client.pipeline(transaction=True)
            for group_id, member in parts:
                name = f"{self.prefix}set:chord:{group_id}"
                pipe.sadd(name, member)
                pipe.scard(name)
                pipe.get(f"{self.prefix}chord-size:{group_id}")
                pipe.expire(name, keep)
            replies = pipe.execute()
            return [(bool(replies[i]), int(replies[i + 1]),
                     int(replies[i + 2]) if replies[i + 2] else None)
                    for i in range(0, len(replies), 4)]
        return self._retry("count chord parts", add)

    def set_chord_size(self, group_id: str, chord_size: int) -> int:
        name, size_key = f"{self.prefix}set:chord:{group_id}", f"{self.prefix}chord-size:{group_id}"
        keep = max(1, int(self.expires or CHORD_KEEP))

        def put() -> int:
            pipe = self.client.pipeline(transaction=True)
            pipe.set(size_key, int(chord_size), ex=keep)
            pipe.scard(name)
            return int(pipe.execute()[1])
        return self._retry("set chord size", put)

    def forget_chord(self, group_id: str) -> None:
        self._retry("forget chord", lambda: self.client.delete(
            f"{self.prefix}set:chord:{group_id}", f"{self.prefix}chord-size:{group_id}"))

    def chord_members(self, group_id: str) -> list[str]:
        members = self._retry("read chord parts", lambda: self.client.smembers(
            f"{self.prefix}set:chord:{group_id}"))
        return sorted(m.decode() for m in members)

    def set_size(self, key: str) -> int:
        return int(self._retry("set size", lambda: self.client.scard(f"{self.prefix}set:{key}")))

    def scan_data(self, prefix: str) -> list[tuple[str, bytes]]:
        def scan() -> list[tuple[str, bytes]]:
            keys = [k.decode() for k in self.client.zrangebylex(
                f"{self.prefix}data-index", f"[{prefix}", f"[{prefix}\xff")]
            if not keys:
                return []
            values = self.client.mget([f"{self.prefix}data:{k}" for k in keys])
            return [(k, v) for k, v in zip(keys, values, strict=True) if v is not None]
        return self._retry("scan data", scan)

    def close(self) -> None:
        self._drop_waiter()
        self._own.close()
        if self._resp3 is not None:
            self._resp3.close()
        self.client.close()
