"""What the Redis broker and result backend share: the client, and riding out outages.

``redis://[:password@]host[:port][/db]``, ``rediss://`` (TLS; ``?ssl_cert_reqs=required|optional|
none&ssl_ca_certs=...&ssl_certfile=...&ssl_keyfile=...``) and ``redis+socket:///path/to.sock
[?db=N]``. Every operation goes through :func:`retrying`: a lost connection is retried with
exponential backoff (logged, URL masked) up to ``broker_connection_max_retries`` times (None or
0: forever), so producers, workers and ``AsyncResult.get`` carry on across a Redis restart; a
Redis never reached fails within ``broker_connection_timeout`` (see runner.reconnect).
"""

from __future__ import annotations

import collections
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import redis
import redis.connection
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NoPermissionError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from runner.config.urls import URL, mask_url
from runner.exceptions import BrokerError, ConfigError, RunnerError
from runner.failover import Failover, failover_of
from runner.reconnect import Attempts, ConnectPolicy

logger = logging.getLogger("runner.redis")

T = TypeVar("T")
OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
#: no outage: retrying cannot fix a password (subclasses of ConnectionError in redis-py) or an
#: ACL that lacks a command or key (NOPERM)
REFUSED_ERRORS = (AuthenticationError, AuthorizationError, NoPermissionError)
STREAM_WINDOW = 1000  # streamed commands a thread may have without their replies read

_CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL,
              "none": ssl.CERT_NONE, "cert_required": ssl.CERT_REQUIRED,
              "cert_optional": ssl.CERT_OPTIONAL, "cert_none": ssl.CERT_NONE}


def make_client(url: URL, options: dict | None = None, protocol: int = 2) -> redis.Redis:
    """A client for ``url``; ``options`` are transport options (``socket_connect_timeout``,
    else ``broker_connection_timeout``, ...). ``protocol=3`` (RESP3, Redis 6+) lets a
    subscribed connection run other commands too."""
    options = options or {}
    connect_timeout = options.get("socket_connect_timeout") or options.get(
        "broker_connection_timeout", 4.0)
    common = {
        "protocol": protocol,
        "password": url.password,
        "username": url.username or None,
        "socket_connect_timeout": float(connect_timeout),
        "socket_keepalive": True,
        "health_check_interval": int(options.get("health_check_interval", 25)),
        "retry": Retry(NoBackoff(), 0),  # retrying() below is the one retry policy
    }
    if url.scheme == "redis+socket":
        return redis.Redis(unix_socket_path=url.path, db=int(url.query.get("db", 0)), **common)
    if url.scheme == "sentinel":
        return sentinel_client(url, options, common)
    if url.scheme == "rediss":
        query = url.query
        common.update(
            ssl=True,
            ssl_cert_reqs=_CERT_REQS.get(str(query.get("ssl_cert_reqs", "required")).lower(),
                                         ssl.CERT_REQUIRED),
            ssl_ca_certs=query.get("ssl_ca_certs"), ssl_certfile=query.get("ssl_certfile"),
            ssl_keyfile=query.get("ssl_keyfile"))
    if len(url.all) > 1:  # a failover list: each connection to the server in use now
        failover = failover_of(url, options, "Redis")
        connection = FailoverSSLConnection if url.scheme == "rediss" else FailoverConnection
        common.pop("retry")
        pool = redis.ConnectionPool(connection_class=connection, failover=failover,
                                    host=url.host or "localhost", port=url.port or 6379,
                                    db=url.db or 0, retry=Retry(NoBackoff(), 0), **common)
        return redis.Redis(connection_pool=pool)
    return redis.Redis(host=url.host or "localhost", port=url.port or 6379, db=url.db or 0,
                       **common)


class _FailoverMixin:
    """A redis-py connection that connects to the failover list's server in use, and moves
    the list on when that fails."""

    def __init__(self, *args: Any, failover: Failover, **kwargs: Any):
        self._failover = failover
        super().__init__(*args, **kwargs)

    def _connect(self):
        url = self._failover.current
        self.host, self.port = url.host or "localhost", url.port or 6379
        try:
            return super()._connect()
        except (OSError, RedisConnectionError, RedisTimeoutError):
            self._failover.lost(url)
            raise


class FailoverConnection(_FailoverMixin, redis.connection.Connection):
    pass


class FailoverSSLConnection(_FailoverMixin, redis.connection.SSLConnection):
    pass


def sentinel_client(url: URL, options: dict, common: dict) -> redis.Redis:
    """A client of the master that Redis Sentinel names (``sentinel://h1:26379;sentinel://
    h2:26379`` with the transport option ``master_name``, as kombu): each new connection asks
    the Sentinels where the master is, so after a failover the next connection finds the
    promoted replica."""
    from redis.sentinel import Sentinel

    name = options.get("master_name")
    if not name:
        raise ConfigError(f"{url.masked}: a sentinel:// URL needs the transport option "
                          f"master_name (broker_transport_options = {{'master_name': "
                          f"'mymaster'}}, or result_backend_transport_options)")
    sentinel_kwargs = dict(options.get("sentinel_kwargs") or {})
    sentinel_kwargs.setdefault("socket_timeout", common["socket_connect_timeout"])
    sentinel_kwargs.setdefault("socket_connect_timeout", common["socket_connect_timeout"])
    sentinels = [(u.host or "localhost", u.port or 26379) for u in url.all]
    master_options = {k: v for k, v in common.items()
                      if k in ("protocol", "password", "username", "socket_connect_timeout",
                               "socket_keepalive", "health_check_interval", "retry")}
    sentinel = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs)
    for (host, port), client in zip(sentinels, sentinel.sentinels, strict=True):
        try:  # a name no Sentinel knows is a mistake, not an outage: say so now
            known = client.sentinel_get_master_addr_by_name(str(name))
        except (RedisConnectionError, RedisTimeoutError, OSError):
            continue  # (this one is down: ask the next; none up is an outage, retried)
        if known is None:
            raise ConfigError(f"{url.masked}: the Sentinel at {host}:{port} knows no master "
                              f"named {str(name)!r}; check master_name in the transport "
                              f"options (SENTINEL MASTERS lists the names it monitors)")
        break
    return sentinel.master_for(str(name), db=url.db or 0,
                               connection_class=_sentinel_connection_class(), **master_options)


def _sentinel_connection_class() -> type:
    """redis-py's Sentinel connection finds the master in ``connect()``; runner's own
    connections connect lazily on their first send (``_connect``), so they must find it there
    too, or they would reach the default localhost:6379."""
    from redis.sentinel import SentinelManagedConnection

    class SentinelConnection(SentinelManagedConnection):
        def _connect(self):
            if self.connection_pool.is_master:
                self.host, self.port = self.connection_pool.get_master_address()
            return super()._connect()

    return SentinelConnection


def retrying(what: str, url: URL, operation: Callable[[], T], policy: ConnectPolicy,
             deadline: float | None = None, error: type[RunnerError] = BrokerError) -> T:
    """Run ``operation``; on a lost connection retry with backoff as ``policy`` says (a server
    never reached fails within its timeout: see runner.reconnect); past ``deadline``
    (monotonic) it raises ``error`` (BrokerError or BackendError) naming the masked URL."""
    attempts = Attempts(policy, url, what, "Redis", error)
    while True:
        try:
            value = operation()
            attempts.succeeded()
            return value
        except REFUSED_ERRORS as exc:
            raise refused(url, what, exc) from exc
        except OUTAGE_ERRORS as exc:
            if untrusted(exc):
                raise ConfigError(
                    f"Redis at {mask_url(url.raw)} ({what}): its TLS certificate is not trusted "
                    f"({exc}); name the CA that signed it with ?ssl_ca_certs=/path/ca.pem in "
                    f"the URL") from exc
            if wants_client_certificate(url, exc):
                raise ConfigError(
                    f"Redis at {mask_url(url.raw)} ({what}) closed the TLS connection: it asks "
                    f"for a client certificate (mutual TLS, tls-auth-clients); give one with "
                    f"?ssl_certfile=/path/client.crt&ssl_keyfile=/path/client.key in the URL"
                    ) from exc
            delay = attempts.failed(exc)
            if deadline is not None and time.monotonic() + delay > deadline:
                raise error(f"cannot reach Redis at {mask_url(url.raw)} ({what}): "
                            f"{type(exc).__name__}: {exc}") from exc
            time.sleep(delay)


def untrusted(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is a failed TLS certificate check: no retry fixes
    that, unlike an outage."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or \
                "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def wants_client_certificate(url: URL, exc: BaseException) -> bool:
    """A TLS server that ends the handshake of a client with no certificate (Redis with
    ``tls-auth-clients yes``): the URL gives none, and the connection died in TLS."""
    if url.scheme != "rediss" or url.query.get("ssl_certfile"):
        return False
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLEOFError | ssl.SSLZeroReturnError) or \
                "CERTIFICATE_REQUIRED" in str(seen) or "certificate required" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def refused(url: URL, what: str, exc: Exception) -> ConfigError:
    """Redis turned the credentials of ``url`` down: a configuration error, not an outage."""
    if isinstance(exc, NoPermissionError) or "NOPERM" in str(exc) or "no permissions" in str(exc):
        return ConfigError(f"Redis at {mask_url(url.raw)} refused a command ({what}): "
                           f"{str(exc).rstrip('.')}; the user's ACL lacks what runner needs "
                           f"(see the README's Security section for the ACL SETUSER line)")
    return ConfigError(f"Redis at {mask_url(url.raw)} refused the credentials ({what}): "
                       f"{type(exc).__name__}: {str(exc).rstrip('.')}; check the password (and "
                       "user) in the URL")


def check_replicas(command: Sequence, reply: object) -> None:
    """After a ``WAIT n timeout`` sent with a write: fewer replicas than ``n`` acknowledged it
    in time is an outage (the caller's retry writes again, idempotently, and waits again)."""
    if command and command[0] == "WAIT" and isinstance(reply, int) and reply < int(command[1]):
        raise RedisConnectionError(f"{reply} of {command[1]} replicas acknowledged the write "
                                   f"within {command[2]} ms (wait_for_replicas)")


def pack(args: Sequence) -> bytes:
    """One command in the Redis protocol (RESP). Callers join several into one write: redis-py
    sends each command of a list with a write of its own."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if not isinstance(arg, bytes):
            arg = str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


class _Own:
    """One thread's connection, with the streamed commands it has not had replies to."""

    __slots__ = ("conn", "owner", "outbox", "unread", "refused", "refusals", "retry_at",
                 "answered")

    def __init__(self, conn) -> None:
        self.conn = conn
        self.owner = threading.current_thread()
        self.outbox: list[Sequence] = []  # streamed, not written on this connection yet
        self.unread: collections.deque[Sequence] = collections.deque()  # written, no reply read
        self.refused: list[Sequence] = []  # answered with an error: written again at retry_at
        self.refusals = 0  # rounds of refusals in a row
        self.retry_at = 0.0
        self.answered = False  # a streamed command had its reply: streaming works here

    @property
    def pending(self) -> int:
        return len(self.outbox) + len(self.unread) + len(self.refused)


class OwnConnections:
    """One connection per thread, of a client's pool but not shared through it, on which
    commands are packed by hand and sent in one write: redis-py's command machinery costs more
    than a round trip on the same machine.

    Commands can also be *streamed* (:meth:`take`, then :meth:`pump`): written without waiting
    for their replies, which are read as they arrive, while the thread sends more, and before
    the thread's next :meth:`roundtrip` returns (Redis runs one connection's commands in order:
    what was streamed runs before what follows) or in :meth:`drain`. A streamed command is
    kept until its reply is read; if the connection is lost first, it is written again on the
    next one, so it must be idempotent (the broker's scripts are, by request token). An error
    reply to a streamed command goes to ``on_error(command, error)``: True sends it again now
    (a script Redis forgot, loaded again), False keeps it to send again after a backoff (Redis
    out of memory: as after an outage, up to ``max_refusals`` rounds, then a BrokerError names
    them through ``describe``), or it raises."""

    def __init__(self, client: redis.Redis,
                 on_error: Callable[[Sequence, Exception], bool] | None = None,
                 describe: Callable[[Sequence[Sequence]], str] = str,
                 max_refusals: int | None = None):
        self.client = client
        self.on_error = on_error
        self.describe = describe
        self.max_refusals = max_refusals
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[_Own] = []  # every thread's, for drain_ended() and close()

    def _own(self) -> _Own:
        own = self._local.__dict__.get("own")
        if own is None:
            own = self._local.own = _Own(self.client.connection_pool.make_connection())
            with self._lock:
                self._all.append(own)
        return own

    def roundtrip(self, commands: Sequence[Sequence]) -> list:
        """Send ``commands`` in one write (behind what was streamed and not written yet) and
        read every reply (an error reply is returned as its exception, not raised: the
        connection stays in step). A lost connection raises (one of OUTAGE_ERRORS) and is
        reopened by the next call."""
        return self._exchange(self._own(), commands, most=0)

    def take(self, commands: Sequence[Sequence]) -> None:
        """Take ``commands`` to stream; :meth:`pump` writes them (and again after an outage:
        they stay taken until their replies are read)."""
        self._own().outbox.extend(commands)

    def pump(self, most: int = STREAM_WINDOW) -> None:
        """Write what is taken; read the replies that arrived, and wait for more while more
        than ``most`` are unread. The first streamed command of a connection waits for its
        reply: a refused login or a missing script is an error of the call that met it."""
        own = self._own()
        self._exchange(own, (), most if own.answered else 0)

    def drain(self) -> None:
        """Return once every streamed command of this thread has its reply."""
        own = self._own()
        if own.pending:
            self._exchange(own, (), 0)

    def forget(self, command: Sequence) -> None:
        """Stop streaming ``command`` (whose caller got an error instead), unless it is
        written on the live connection already (its reply is expected there, in order)."""
        own = self._own()
        if command in own.outbox:
            own.outbox.remove(command)

    def pending(self) -> int:
        own = self._local.__dict__.get("own")
        return own.pending if own is not None else 0

    def _exchange(self, own: _Own, commands: Sequence[Sequence], most: int) -> list:
        """Write what is taken (refused ones whose backoff is over too) and ``commands``;
        read streamed replies down to ``most`` unread, then the replies to ``commands``."""
        try:
            replies = self._write_read(own, commands, most)
            while len(own.unread) + len(own.refused) > most:  # refused ones are left
                self._wait_refused(own)
                self._write_read(own, (), most)
            return replies
        except BaseException:  # an outage, or an error raised part way through the replies:
            own.conn.disconnect()  # replies may be left unread, so this connection is out of step
            own.outbox[:0] = own.unread  # the next connection writes them again, first
            own.unread.clear()
            raise

    def _write_read(self, own: _Own, commands: Sequence[Sequence], most: int) -> list:
        conn = own.conn
        if own.refused and time.monotonic() >= own.retry_at:
            own.outbox.extend(own.refused)
            own.refused.clear()
        if own.outbox or commands:
            conn.send_packed_command(
                [b"".join(pack(c) for c in (*own.outbox, *commands))], check_health=False)
            own.unread.extend(own.outbox)
            own.outbox.clear()
        self._read_streamed(own, most if not commands else 0)
        replies = []
        for _ in commands:
            try:
                replies.append(conn.read_response())
            except ResponseError as exc:
                replies.append(exc)
        return replies

    def _read_streamed(self, own: _Own, most: int) -> None:
        """Read replies of streamed commands: all that arrived, and more while more than
        ``most`` are unread."""
        conn, unread = own.conn, own.unread
        while unread and (len(unread) > most or conn.can_read(timeout=0)):
            try:
                conn.read_response()
                unread.popleft()
                own.refusals, own.answered = 0, True
            except ResponseError as exc:
                command = unread.popleft()
                if self.on_error is not None and self.on_error(command, exc):
                    own.outbox.append(command)
                else:
                    self._refuse(own, command, exc)

    def _refuse(self, own: _Own, command: Sequence, exc: Exception) -> None:
        own.refused.append(command)
        now = time.monotonic()
        if now < own.retry_at:
            return  # (one more of this round)
        own.refusals += 1
        delay = min(5.0, 0.1 * 2 ** min(own.refusals - 1, 6))
        own.retry_at = now + delay
        logger.warning("Redis refused %s (%s); sending again in %.2fs (then the others it "
                       "refuses meanwhile)", self.describe([command]), exc, delay)

    def _wait_refused(self, own: _Own) -> None:
        """Sleep until the refused ones may go again; after ``max_refusals`` rounds, give
        them up with an error that names them."""
        if self.max_refusals and own.refusals >= self.max_refusals:
            given_up, own.refused = own.refused, []
            raise BrokerError(f"Redis refused {self.describe(given_up)} {own.refusals} times "
                              f"in a row; they are not sent")
        time.sleep(max(0.0, own.retry_at - time.monotonic()))

    def drain_ended(self, attempt: Callable[[Callable[[], None], Callable[[], str]], None]
                    ) -> None:
        """Drain, through ``attempt(drain, describe_pending)``, what this thread and the
        threads that ended streamed (another live thread's connection is its own to use)."""
        with self._lock:
            owns = list(self._all)
        for own in owns:
            if own.pending and (own.owner is threading.current_thread()
                                or not own.owner.is_alive()):
                attempt(lambda own=own: self._exchange(own, (), 0),
                        lambda own=own: self.describe([*own.outbox, *own.unread,
                                                       *own.refused]))

    def close(self) -> None:
        with self._lock:
            owns, self._all = self._all, []
        self._local.__dict__.pop("own", None)
        for own in owns:
            own.conn.disconnect()
