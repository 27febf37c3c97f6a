"""RabbitMQ connections for the ``amqp://`` broker and the ``rpc://`` result backend (pika).

A :class:`Link` is one blocking connection and one channel, used by one thread. After an outage
(RabbitMQ restarted, network lost) :meth:`Link.run` reopens it with exponential backoff (0.1 s
doubling to 5 s, logged with the URL masked) and runs the operation again, up to
``max_retries`` attempts (0 or None: forever); a RabbitMQ this process never reached fails
within ``broker_connection_timeout`` (see runner.reconnect). A wrong password or a missing
virtual host is not an outage: it is one :class:`ConfigError` naming the user and the vhost
(password masked), at once, as on Redis.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pika
import pika.exceptions as amqp_errors
from pika.adapters.blocking_connection import BlockingChannel

from runner.config.urls import URL
from runner.exceptions import BrokerError, ConfigError, RunnerError
from runner.failover import failover_of
from runner.reconnect import Attempts, ConnectPolicy, backoff, mark_reached
from runner.stores.amqp_writes import DirectWrites, install

logger = logging.getLogger("runner.amqp")
if logging.getLogger("pika").level == logging.NOTSET:
    # pika logs each connection step, and each failed one with a traceback; runner's own
    # warnings say what failed (URL masked) and what happens next
    logging.getLogger("pika").setLevel(logging.CRITICAL)

T = TypeVar("T")

#: errors that mean "the connection is gone": reconnect and try again
OUTAGE_ERRORS = (amqp_errors.AMQPConnectionError, amqp_errors.ConnectionWrongStateError,
                 amqp_errors.ChannelWrongStateError, amqp_errors.StreamLostError,
                 ConnectionError, OSError)


def connection_parameters(url: URL, options: dict | None = None,
                          heartbeats: bool = True) -> pika.ConnectionParameters:
    """``amqp://user:pass@host:port/vhost``; ``pyamqp://`` alone is guest:guest@localhost:5672/.
    Without ``heartbeats`` (a connection used only to publish, by a thread that may leave it
    idle for long) RabbitMQ never closes it for silence; a dead one fails at its next use and
    is reopened then."""
    options = options or {}
    secure = url.scheme == "amqps"
    ssl_options = None
    if secure:
        ssl_options = pika.SSLOptions(tls_context(url), url.host or "localhost")
    return pika.ConnectionParameters(
        host=url.host or "localhost", port=url.port or (5671 if secure else 5672),
        virtual_host=url.path or "/",
        credentials=pika.PlainCredentials(url.username or "guest", url.password or "guest"),
        heartbeat=int(options.get("heartbeat", 60)) if heartbeats else 0,
        connection_attempts=1, socket_timeout=float(options.get(
            "socket_timeout", options.get("broker_connection_timeout", 4.0))),
        blocked_connection_timeout=float(options.get("blocked_connection_timeout", 60.0)),
        ssl_options=ssl_options)


def tls_context(url: URL) -> ssl.SSLContext:
    """The TLS context of an ``amqps://`` URL, with Redis's query names: ``ssl_ca_certs`` (the
    CA that signed the server's certificate), ``ssl_certfile`` + ``ssl_keyfile`` (this client's
    certificate, for servers that require one: mutual TLS), ``ssl_cert_reqs=none``."""
    query = url.query
    try:
        context = ssl.create_default_context(cafile=query.get("ssl_ca_certs") or None)
        if query.get("ssl_certfile"):
            context.load_cert_chain(query["ssl_certfile"], query.get("ssl_keyfile") or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"amqps:// TLS files in {url.masked}: {exc}") from None
    if query.get("ssl_cert_reqs", "").lower() in ("none", "cert_none"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def who(url: URL) -> str:
    return f"user {url.username or 'guest'!r} on vhost {url.path or '/'!r} at {url.masked}"


def open_connection(url: URL, options: dict | None = None,
                    heartbeats: bool = True) -> pika.BlockingConnection:
    """A new connection; a refused login or vhost raises :class:`ConfigError` (not retried),
    an unreachable server raises pika's own error (an outage: the caller retries)."""
    failover = failover_of(url, options or {}, "RabbitMQ") if len(url.all) > 1 else None
    target = failover.current if failover is not None else url
    try:
        return pika.BlockingConnection(connection_parameters(target, options, heartbeats))
    except amqp_errors.ProbableAuthenticationError:
        raise ConfigError(f"RabbitMQ refused the login of {who(target)}: wrong user name or "
                          f"password (rabbitmqctl add_user / change_password)") from None
    except amqp_errors.ProbableAccessDeniedError as exc:
        reason = str(exc.args[0]) if exc.args else str(exc)
        missing = "not found" in reason
        problem = ("the vhost does not exist (rabbitmqctl add_vhost)" if missing else
                   "the user has no permissions on the vhost (rabbitmqctl set_permissions)")
        raise ConfigError(f"RabbitMQ refused access for {who(target)}: {problem}") from None
    except (amqp_errors.AMQPConnectionError, OSError) as exc:  # (ssl.SSLError is an OSError)
        problem = tls_problem(target, exc)
        if problem:
            raise ConfigError(f"RabbitMQ at {target.masked}: {problem}") from None
        if failover is not None:  # the next attempt goes to the next server of the list
            failover.lost(target)
        raise


def tls_problem(url: URL, exc: BaseException) -> str | None:
    """Why a TLS connection failed where no retry helps: an untrusted server certificate, or a
    server that wants a client certificate this URL does not give."""
    if url.scheme != "amqps":
        return None
    text, seen = "", exc
    while seen is not None:  # pika wraps the TLS error (its args, or as the cause)
        text += f" {seen!r} {seen}"
        seen = seen.__cause__ or seen.__context__
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return ("its TLS certificate is not trusted; name the CA that signed it with "
                "?ssl_ca_certs=/path/ca.pem in the URL")
    if not url.query.get("ssl_certfile") and ("EOF" in text or "CERTIFICATE_REQUIRED" in text
                                              or "certificate required" in text):
        return ("it closed the TLS connection: it asks for a client certificate (mutual TLS, "
                "ssl_options.fail_if_no_peer_cert); give one with ?ssl_certfile=/path/client.crt"
                "&ssl_keyfile=/path/client.key in the URL")
    return None


def declare_error(url: URL, queue: str, exc: amqp_errors.ChannelClosedByBroker,
                  max_priority: int | None = None) -> RunnerError:
    """Why RabbitMQ refused to declare ``queue``: a queue that exists with other arguments is
    a configuration error (no retry fixes it), named with the setting that decides them."""
    if exc.reply_code == 406 and "x-queue-type" in str(exc.reply_text):
        return ConfigError(f"queue {queue!r} on vhost {url.path or '/'!r} exists with another "
                           f"type ({exc.reply_text}): task_default_queue_type and the "
                           f"x-queue-type of task_queues must match it, or delete the queue "
                           f"(rabbitmqctl delete_queue) or use another vhost")
    if exc.reply_code == 406:
        wanted = (f"x-max-priority {max_priority} (from max_priority in task_queues, or "
                  f"task_queue_max_priority)" if max_priority else
                  "no x-max-priority (set max_priority in task_queues, or "
                  "task_queue_max_priority, to keep a priority queue)")
        return ConfigError(f"queue {queue!r} on vhost {url.path!r} exists with other settings "
                           f"({exc.reply_text}); runner declares it durable with {wanted}: "
                           f"change the setting to match, or delete the queue (rabbitmqctl "
                           f"delete_queue) or use another vhost")
    return BrokerError(f"RabbitMQ closed the channel on queue {queue!r} ({who(url)}): "
                       f"{exc.reply_code} {exc.reply_text}")


class Link:
    """One connection and one channel for one thread, reopened after an outage."""

    def __init__(self, url: URL, options: dict | None = None, confirm: bool = False,
                 heartbeats: bool = True):
        self.url = url
        self.options = dict(options or {})
        self.confirm = confirm
        self.heartbeats = heartbeats  # False: for publishing only (see connection_parameters)
        self.policy = ConnectPolicy.from_options(self.options)
        self.max_retries = self.policy.max_retries
        self.connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self.writes: DirectWrites | None = None  # frames sent at once (see amqp_writes)
        self.generation = 0  # bumped on each (re)connection: delivery tags die with a channel
        self.owner = threading.current_thread()

    def channel(self) -> BlockingChannel:
        if self._channel is None or not self._channel.is_open:
            self.drop()
            self.connection = open_connection(self.url, self.options, self.heartbeats)
            mark_reached(self.url)
            self.writes = install(self.connection)
            self._channel = self.connection.channel()
            if self.confirm:
                self._channel.confirm_delivery()
            self.generation += 1
        return self._channel

    def open_channel(self) -> BlockingChannel | None:
        """The channel if it is still open, never a new one: delivery tags die with theirs."""
        return self._channel if self._channel is not None and self._channel.is_open else None

    def run(self, what: str, operation: Callable[[BlockingChannel], T]) -> T:
        """``operation(channel)``; after an outage reconnect with backoff and run it again (a
        RabbitMQ never reached: an error within the policy's timeout, see runner.reconnect)."""
        attempts = Attempts(self.policy, self.url, what, "RabbitMQ", jitter=False, lost="lost")
        while True:
            try:
                result = operation(self.channel())
                attempts.succeeded()
                return result
            except OUTAGE_ERRORS as exc:
                self.drop()
                time.sleep(attempts.failed(exc))

    def corked(self) -> contextlib.AbstractContextManager:
        """Frames written inside go out in one send, on the way out."""
        return self.writes.corked() if self.writes is not None else contextlib.nullcontext()

    def sent(self) -> bool:
        """Whether all that was written went to the socket (False: some waits for pika's
        ioloop, e.g. on a TLS connection, whose writes pika sends on its next poll)."""
        return self.writes is not None and not self.writes.queued

    backoff = staticmethod(backoff)

    def drop(self) -> None:
        """Forget the connection (closing it if it is still open)."""
        connection, self.connection, self._channel = self.connection, None, None
        self.writes = None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - it is going away anyway
                pass

    close = drop
