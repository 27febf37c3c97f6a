"""``redis://``: the broker for many workers on many hosts.

Layout (prefix ``runner:``, transport option ``global_keyprefix``):

- ``q:<queue>``   sorted set of delivery ids (``<task id>#<sequence>``: a retry of a task is a
                  new delivery); score = (9 - priority) * 1e12 + sequence, so ZPOPMIN gives
                  the highest priority first, oldest first within it;
- ``body``        hash id -> message bytes;  ``info``  hash id -> "queue<TAB>score";
- ``unacked``     sorted set id -> claim deadline;  ``deliveries``  hash id -> count;
- ``delayed``     sorted set id -> eta (countdown/eta tasks wait here, in Redis);
- ``wake:<queue>`` list of tokens an idle worker blocks on (BLPOP), pushed with each message;
- ``dead``        hash key -> dead letter;  ``dead:at``  sorted set key -> when it was buried.

Every state change is one Lua script, so it is atomic: a fetch moves due delayed messages and
expired claims back to their queues and claims up to ``limit`` messages in one step; an ack
removes the message; a retry replaces it. Delivery is at least once: a claim not renewed within
``visibility_timeout`` seconds (the worker renews it while the task runs) is delivered again.
Enqueue, fetch and retry carry a request token (``done:<token>``, kept ten minutes), so when a
connection drops after Redis ran the script but before its reply arrived, the retried call
neither enqueues twice nor loses the claims it made (they are returned again).
A lost wake token costs latency, never a message: waiting always ends within one second.

Scripts are sent on a connection of the broker's own (one per thread), packed by hand and
written at once: redis-py's command machinery costs more than the round trip itself. So
``delay()`` is one EVALSHA, *streamed*: written without waiting for its reply, which is read
as it arrives, before the thread's next other command (acks included) returns, in ``flush()``,
``AsyncResult.get()`` after a second without a result, at close and at exit; until then it is
kept and written again after an outage (its token makes it run once). A worker process
settles a batch and claims the next in one round trip (results, ack script, fetch script); an
idle one sends the fetch script right behind its
BLPOP on the wake lists, so Redis claims the message for it the moment one is announced.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import replace

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from runner.brokers.base import Broker, Delivery, QueueCounts
from runner.brokers.redis_scripts import (
    ACK,
    ENQUEUE,
    EXTEND,
    FETCH,
    MAX_IDLE_BLOCK,
    PURGE,
    REQUEUE,
    RETRY,
)
from runner.config.urls import URL
from runner.dead_letters import DeadLetter
from runner.exceptions import RunnerError
from runner.message import Message
from runner.reconnect import ConnectPolicy
from runner.stores.redis import (
    OUTAGE_ERRORS,
    OwnConnections,
    check_replicas,
    make_client,
    refused,
    retrying,
)

logger = logging.getLogger("runner.redis")

class RedisBroker(Broker):
    """``redis://:password@host:port/db``; see the module docstring for the guarantees."""

    scheme = "redis"
    fanout_class = "runner.brokers.redis_fanout:RedisFanout"

    def __init__(self, url: URL, transport_options: dict | None = None):
        super().__init__(url, transport_options)
        options = self.transport_options
        self.prefix = str(options.get("global_keyprefix", "runner:"))
        self.policy = ConnectPolicy.from_options(options)
        self.max_retries = self.policy.max_retries  # 0: retry forever
        self.client = make_client(url, options)
        #: wait_for_replicas: an enqueue returns once that many replicas have it (Redis WAIT,
        #: up to wait_for_replicas_timeout s, sent again until they do): no acknowledged task
        #: is lost when Sentinel promotes a replica. 0: streamed, replicated asynchronously.
        self.wait_for_replicas = int(options.get("wait_for_replicas") or 0)
        self.wait_timeout_ms = int(float(options.get("wait_for_replicas_timeout") or 1.0) * 1000)
        self._scripts = {name: self.client.register_script(source) for name, source in {
            "enqueue": ENQUEUE, "fetch": FETCH, "ack": ACK, "requeue": REQUEUE,
            "extend": EXTEND, "retry": RETRY, "purge": PURGE}.items()}
        self._wake_keys: dict[tuple[str, ...], list[str]] = {}  # queues -> wake list keys
        self._local = threading.local()
        # scripts go out on these (see _send); enqueues are streamed (see enqueue)
        self._own = OwnConnections(self.client, self._streamed_error, self._describe,
                                   self.max_retries)
        atexit.register(_drain_at_exit, weakref.ref(self))

    def _run(self, what: str, script: str, args: list) -> object:
        return retrying(what, self.url, lambda: self._send([(script, args)])[-1],
                        self.policy)

    def _send(self, calls: Sequence[tuple[str | None, Sequence]]) -> list:
        """One round trip on this thread's own connection: each call is a script's name and
        its ARGV, or None and a plain command; returns every reply. If the server forgot a
        script (a restart), all scripts are loaded again and the calls re-sent: callers make
        them idempotent (request tokens)."""
        commands = [["EVALSHA", self._scripts[name].sha, 0, *args] if name else args
                    for name, args in calls]
        replies = self._own.roundtrip(commands)
        if any(isinstance(reply, NoScriptError) for reply in replies):
            # loaded on this very connection: after a failover the pool's connections may
            # reach another server than this one for a moment
            loads = [["SCRIPT", "LOAD", script.script] for script in self._scripts.values()]
            replies = self._own.roundtrip(loads + commands)[len(loads):]
            if any(isinstance(reply, NoScriptError) for reply in replies):
                raise RedisConnectionError("Redis forgot runner's scripts as soon as they "
                                           "were loaded (a failover under way?)")
        for (_name, args), reply in zip(calls, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            check_replicas(args, reply)
        return replies

    def check(self, queues: Sequence[str] = ()) -> None:
        retrying("connect", self.url, self.client.ping, self.policy)

    @staticmethod
    def _token() -> str:
        """Names one call, retries included (see the module docstring)."""
        return os.urandom(12).hex()

    # -- producing ----------------------------------------------------------------------------

    def enqueue(self, messages: Sequence[Message]) -> None:
        """Stream the enqueue script: it is written now, and its reply read later, as it
        arrives (while this thread sends more), before this thread's next other command
        returns (its acks included), in :meth:`flush`, at close and at exit. Until then it is
        kept, and written again after an outage (its request token makes it run once)."""
        args: list = [self.prefix, repr(time.time())]
        for message in messages:
            args += [message.id, message.queue, message.priority or 0,
                     repr(message.eta or 0.0), self.wire(message)]
        command = ["EVALSHA", self._scripts["enqueue"].sha, 0, *args, self._token()]
        if self.wait_for_replicas:
            retrying("enqueue", self.url, lambda: self._replicated(command), self.policy)
            return
        self._own.take([command])
        try:
            retrying("enqueue", self.url, self._own.pump, self.policy)
        except BaseException:
            self._own.forget(command)  # the caller has the error: not sent later behind it
            raise

    def _replicated(self, command: list) -> None:
        """Run ``command`` and WAIT for the replicas in the same write; fewer replicas than
        asked within the timeout is an outage (retried: the request token makes the script
        run once, and WAIT is asked again)."""
        replies = self._own.roundtrip([command, ["WAIT", self.wait_for_replicas,
                                                 self.wait_timeout_ms]])
        if isinstance(replies[0], NoScriptError):
            loads = [["SCRIPT", "LOAD", s.script] for s in self._scripts.values()]
            self._own.roundtrip(loads)
            raise RedisConnectionError("Redis had forgotten runner's scripts (loaded again)")
        if isinstance(replies[0], Exception):
            if self._streamed_error(command, replies[0]):
                raise RedisConnectionError(str(replies[0]))
            raise replies[0]
        if int(replies[1]) < self.wait_for_replicas:
            raise RedisConnectionError(
                f"{replies[1]} of {self.wait_for_replicas} replicas acknowledged the enqueue "
                f"within {self.wait_timeout_ms} ms (wait_for_replicas)")

    def flush(self) -> None:
        """Return once Redis has run every enqueue this thread streamed."""
        if self._own.pending():
            retrying("enqueue", self.url, self._own.drain, self.policy)

    def _streamed_error(self, command: Sequence, exc: Exception) -> bool:
        """An error reply to a streamed enqueue: after a restart that lost the scripts, load
        them and send it again now; a refused login is a ConfigError; anything else (Redis
        out of memory) is sent again after a backoff (see OwnConnections)."""
        if isinstance(exc, NoScriptError):
            for script in self._scripts.values():
                self.client.script_load(script.script)
            return True
        if any(word in str(exc) for word in ("NOAUTH", "unauthenticated", "NOPERM",
                                              "no permissions")):
            raise refused(self.url, "enqueue", exc)
        return False

    def _describe(self, commands: Sequence[Sequence]) -> str:
        """The tasks of streamed enqueue commands, for a log line or an error."""
        ids = [str(i) for command in commands for i in command[5:-1:5]]
        shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
        return f"the enqueue of {len(ids)} task(s) ({shown}) at {self.url.masked}"

    def _drain_ended(self) -> None:
        """At close or exit: the replies of what this thread (and threads that ended)
        streamed, with one reconnection at most; what cannot be confirmed is named."""
        def attempt(drain, pending) -> None:
            try:
                retrying("enqueue", self.url, drain, replace(self.policy, max_retries=1))
            except (RunnerError, *OUTAGE_ERRORS) as exc:
                logger.error("Redis never answered %s (%s): they may be lost", pending(), exc)
        self._own.drain_ended(attempt)

    # -- consuming ----------------------------------------------------------------------------

    def fetch(self, queues: Sequence[str], limit: int, consumer: str) -> list[Delivery]:
        self.watch(queues)
        rows = self._run("fetch", "fetch", self._fetch_args(queues, limit, self._token()))
        return self._deliveries(rows)

    def _fetch_args(self, queues: Sequence[str], limit: int, token: str) -> list:
        """ARGV of the fetch script: claims made now last ``visibility_timeout``."""
        now = time.time()
        return [self.prefix, repr(now), repr(now + self.visibility_timeout), limit, token,
                *queues]

    @staticmethod
    def _deliveries(rows: list) -> list[Delivery]:
        return [Delivery(tag=rows[i].decode(), body=rows[i + 2], queue=rows[i + 1].decode(),
                         redelivered=int(rows[i + 3]) > 1, deliveries=int(rows[i + 3]))
                for i in range(0, len(rows), 4)]

    def wait(self, timeout: float) -> bool:
        """Block on the wake lists of the queues fetched last (at most a second at a time)."""
        keys = self._local.__dict__.get("wake_keys") or [f"{self.prefix}wake:celery"]
        if timeout <= 0:  # only: did anything arrive since the last call? (takes the tokens)
            return bool(retrying("wait", self.url, lambda: self.client.delete(*keys),
                                 self.policy))
        block = min(timeout, MAX_IDLE_BLOCK)
        got = retrying("wait", self.url, lambda: self.client.blpop(keys, timeout=block),
                       self.policy)
        return got is not None

    def fetch_waiting(self, queues: Sequence[str], limit: int, consumer: str,
                      timeout: float) -> list[Delivery]:
        """One round trip: the fetch script is sent right behind a BLPOP on the wake lists,
        so Redis runs it the moment a message is announced (or the block times out)."""
        self.watch(queues)
        block = repr(round(min(max(timeout, 0.001), MAX_IDLE_BLOCK), 3))
        token = self._token()

        def call() -> list:
            return self._send([(None, ["BLPOP", *self._local.wake_keys, block]),
                               ("fetch", self._fetch_args(queues, limit, token))])[-1]
        return self._deliveries(retrying("fetch", self.url, call, self.policy))

    def watch(self, queues: Sequence[str]) -> None:
        """Which queues :meth:`wait` wakes for: those this thread fetched from last."""
        key = tuple(queues)
        if key not in self._wake_keys:
            self._wake_keys[key] = [f"{self.prefix}wake:{q}" for q in queues]
        self._local.wake_keys = self._wake_keys[key]

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            self._run("ack", "ack", [self.prefix, *(d.tag for d in deliveries)])

    def ack_and_store(self, deliveries: Sequence[Delivery], records: Sequence, backend) -> bool:
        """One round trip: the results' SET/PUBLISH and the ack script (with SELECTs around
        the results when they live in another database of the same server)."""
        store = self._store_commands(records, backend)
        if store is None:
            return False
        calls = [*store, ("ack", [self.prefix, *(d.tag for d in deliveries)])] if deliveries \
            else store
        if calls:
            retrying("store and ack", self.url, lambda: self._send(calls), self.policy)
        return True

    def ack_store_fetch(self, deliveries: Sequence[Delivery], records: Sequence, backend,
                        queues: Sequence[str], limit: int, consumer: str
                        ) -> list[Delivery] | None:
        """One round trip: results, the ack script and the fetch script."""
        store = self._store_commands(records, backend)
        if store is None:
            return None
        self.watch(queues)
        token = self._token()  # the same on each retry: claims are never made twice

        def call() -> list:
            calls = list(store)
            if deliveries:
                calls.append(("ack", [self.prefix, *(d.tag for d in deliveries)]))
            calls.append(("fetch", self._fetch_args(queues, limit, token)))
            return self._send(calls)[-1]
        return self._deliveries(retrying("store, ack and fetch", self.url, call,
                                         self.policy))

    def _store_commands(self, records: Sequence, backend) -> list[tuple[None, list]] | None:
        """The commands that store ``records`` in ``backend`` from this broker's connection,
        or None if the backend is not on this Redis server."""
        if not backend.shares_store_with(self.url, self.transport_options):
            return None
        return [(None, command)
                for command in backend.store_commands(records, from_db=self.url.db or 0)]

    def requeue(self, deliveries: Sequence[Delivery], started: bool = False) -> None:
        if deliveries:
            self._run("requeue", "requeue", [self.prefix, "0" if started else "1",
                                             *(d.tag for d in deliveries)])

    def extend(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            deadline = repr(time.time() + self.visibility_timeout)
            self._run("extend", "extend", [self.prefix, deadline, *(d.tag for d in deliveries)])

    def retry(self, delivery: Delivery, message: Message) -> None:
        self._run("retry", "retry", [self.prefix, repr(time.time()), delivery.tag, message.id,
                                     message.queue, message.priority or 0,
                                     repr(message.eta or 0.0), self.wire(message),
                                     self._token()])

    # -- admin --------------------------------------------------------------------------------

    def purge(self, queues: Sequence[str]) -> int:
        return int(self._run("purge", "purge", [self.prefix, *queues]))

    def qsize(self, queue: str) -> int:
        self.flush()  # (counted on another connection: this thread's enqueues first)

        def count() -> int:
            ready = self.client.zcard(f"{self.prefix}q:{queue}")
            delayed = self.client.zrange(f"{self.prefix}delayed", 0, -1)
            infos = self.client.hmget(f"{self.prefix}info", delayed) if delayed else []
            return ready + sum(1 for info in infos
                               if info and info.split(b"\t", 1)[0].decode() == queue)
        return retrying("qsize", self.url, count, self.policy)

    # -- dead letters -------------------------------------------------------------------------

    def queue_counts(self, queues: Sequence[str]) -> dict[str, QueueCounts]:
        self.flush()  # (counted on another connection: this thread's enqueues first)
        prefix = self.prefix

        def count() -> dict[str, QueueCounts]:
            with self.client.pipeline(transaction=True) as pipe:  # (one consistent look)
                for queue in queues:
                    pipe.zcard(f"{prefix}q:{queue}")
                pipe.zrange(f"{prefix}delayed", 0, -1)
                pipe.zrange(f"{prefix}unacked", 0, -1)
                *ready, delayed, unacked = pipe.execute()
            counts = {q: QueueCounts(n, 0, 0) for q, n in zip(queues, ready, strict=True)}
            for ids, field in ((delayed, "delayed"), (unacked, "unacked")):
                for queue in self._queues_of(ids):
                    if queue in counts:
                        setattr(counts[queue], field, getattr(counts[queue], field) + 1)
            return counts
        return retrying("queue counts", self.url, count, self.policy)

    def _queues_of(self, ids: list) -> list[str]:
        infos = self.client.hmget(f"{self.prefix}info", ids) if ids else []
        return [info.split(b"\t", 1)[0].decode() for info in infos if info]

    def queue_names(self) -> list[str]:
        def names() -> list[str]:
            found = {key.decode()[len(self.prefix) + 2:]
                     for key in self.client.scan_iter(match=f"{self.prefix}q:*", count=1000)}
            for zkey in ("delayed", "unacked"):
                found.update(self._queues_of(self.client.zrange(f"{self.prefix}{zkey}", 0, -1)))
            return sorted(found)
        return retrying("queue names", self.url, names, self.policy)

    def bury(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        dead, at = f"{self.prefix}dead", f"{self.prefix}dead:at"
        calls: list = [(None, ["MULTI"])]
        for letter in letters:
            calls += [(None, ["HSET", dead, letter.key, letter.encode()]),
                      (None, ["ZADD", at, repr(letter.died_at), letter.key])]
        calls.append((None, ["EXEC"]))
        retrying("bury", self.url, lambda: self._send(calls), self.policy)

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        def read() -> list:
            keys = self.client.zrevrange(f"{self.prefix}dead:at", 0, max(0, limit - 1))
            return self.client.hmget(f"{self.prefix}dead", keys) if keys else []
        raw = retrying("dead letters", self.url, read, self.policy)
        return [DeadLetter.decode(item) for item in raw[:limit] if item is not None]

    def dead_letter_count(self) -> int:
        return int(retrying("dead letters", self.url,
                            lambda: self.client.hlen(f"{self.prefix}dead"), self.policy))

    def remove_dead(self, keys: Sequence[str] | None = None) -> int:
        dead, at = f"{self.prefix}dead", f"{self.prefix}dead:at"
        if keys is None:
            def remove_all() -> int:
                with self.client.pipeline() as pipe:
                    count = pipe.hlen(dead).delete(dead, at).execute()[0]
                return int(count)
            return retrying("purge dead letters", self.url, remove_all, self.policy)
        if not keys:
            return 0
        def remove() -> int:
            with self.client.pipeline() as pipe:
                return int(pipe.hdel(dead, *keys).zrem(at, *keys).execute()[0])
        return retrying("purge dead letters", self.url, remove, self.policy)

    def close(self) -> None:
        self._drain_ended()
        self._own.close()
        self.client.close()


def _drain_at_exit(ref: weakref.ref) -> None:
    """At interpreter exit: a script that calls ``delay()`` and ends leaves nothing unread."""
    broker = ref()
    if broker is not None:
        broker._drain_ended()

