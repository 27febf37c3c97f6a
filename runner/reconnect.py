"""When a client gives up on its server: fast on a server never reached, slowly on an outage.

A wrong host or port must not keep ``delay()``, a worker or ``AsyncResult.get()`` retrying for
minutes, while a Redis or RabbitMQ restarted under a running worker must be ridden out. So a
server this process has never reached (a configuration mistake, or a server not up yet) is
tried within Celery's ``broker_connection_timeout`` (default 4 s, also each attempt's socket
connect timeout): attempts with backoff until that budget or ``broker_connection_max_retries``
attempts are spent, or only one attempt with ``broker_connection_retry_on_startup=False``. The
error names the masked URL, the attempts and the last failure. Once a server has answered, a
lost connection is an outage: retried with backoff (0.1 s doubling to 5 s) up to
``max_retries`` times (the transport option, else ``broker_connection_max_retries``; 0 or None:
forever).

"Reached" is per process and per server (host and port, or socket path), so a result backend on
the broker's Redis counts as reached once the broker answered; forked worker children inherit it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from runner.config.urls import URL
from runner.exceptions import BrokerError, RunnerError

logger = logging.getLogger("runner.reconnect")

MAX_BACKOFF = 5.0

_reached: set[tuple] = set()
_lock = threading.Lock()


def _server(url: URL) -> tuple:
    if len(url.all) > 1:  # a failover list counts as one: reached once any of it was
        return ("list", url.raw)
    return (url.host, url.port) if url.host else (url.scheme, url.path)


def reached(url: URL) -> bool:
    """Whether this process has talked to the server of ``url`` (its outages are ridden out)."""
    return _server(url) in _reached


def mark_reached(url: URL) -> None:
    key = _server(url)
    if key not in _reached:
        with _lock:
            _reached.add(key)


@dataclass(frozen=True)
class ConnectPolicy:
    """Celery's connection settings, as a client reads them (see the module docstring)."""

    timeout: float = 4.0  # broker_connection_timeout
    retry_on_startup: bool = True  # broker_connection_retry_on_startup
    max_retries: int | None = 100  # after a connection worked; 0 or None: forever

    @classmethod
    def from_options(cls, options: Mapping) -> ConnectPolicy:
        """From the transport options the app hands a broker or backend: the
        ``broker_connection_*`` settings it adds, and ``max_retries`` when set."""
        retries = options.get("max_retries")
        if retries is None:
            retries = options.get("broker_connection_max_retries", 100)
        on_startup = options.get("broker_connection_retry_on_startup")
        if on_startup is None:
            on_startup = options.get("broker_connection_retry", True)
        return cls(timeout=float(options.get("broker_connection_timeout", 4.0)),
                   retry_on_startup=bool(on_startup), max_retries=retries)


def backoff(attempt: int) -> float:
    """Seconds before retry ``attempt`` (1, 2, ...): 0.1 doubling to MAX_BACKOFF."""
    return min(MAX_BACKOFF, 0.1 * 2 ** min(attempt - 1, 6))


class Attempts:
    """The retries of one call against ``url``: :meth:`failed` after each lost attempt returns
    the seconds to sleep, or raises ``error`` once the budget is spent."""

    def __init__(self, policy: ConnectPolicy, url: URL, what: str, server: str,
                 error: type[RunnerError] = BrokerError, jitter: bool = True,
                 lost: str = "cannot reach"):
        self.policy, self.url, self.what, self.server = policy, url, what, server
        self.error, self.jitter, self.lost = error, jitter, lost  # lost: words of the log
        self.first = not reached(url)
        self.began = time.monotonic()
        self.count = 0

    def succeeded(self) -> None:
        mark_reached(self.url)
        if self.count:
            logger.warning("%s: reconnected to %s at %s after %d retries", self.what,
                           self.server, self.url.masked, self.count)

    def failed(self, exc: BaseException) -> float:
        self.count += 1
        limit = self.policy.max_retries
        delay = backoff(self.count) * ((0.5 + random.random() / 2) if self.jitter else 1.0)
        level, words = logging.WARNING, self.lost  # an outage: say so
        if self.first and not reached(self.url):
            level, words = logging.INFO, "cannot reach"  # (the error tells the attempts)
            spent = time.monotonic() - self.began
            left = self.policy.timeout - spent
            if not self.policy.retry_on_startup or left <= 0 or (limit and self.count >= limit):
                raise self.error(
                    f"could not connect to {self.server} at {self.url.masked} ({self.what}) "
                    f"after {self.count} attempt{'s' if self.count > 1 else ''} in {spent:.1f} s"
                    f": {describe(exc)}; check the host and port in the URL and that the server "
                    f"is running (broker_connection_timeout={self.policy.timeout:g})")
            delay = min(delay, left)
        elif limit and self.count > limit:
            raise self.error(f"cannot reach {self.server} at {self.url.masked} ({self.what}) "
                             f"after {limit} retries: {describe(exc)}")
        logger.log(level, "%s: %s %s at %s (%s); retry %d in %.2fs", self.what, words,
                   self.server, self.url.masked, describe(exc), self.count, delay)
        return delay


def describe(exc: BaseException) -> str:
    """A connection failure in a few words (``Connection refused``), whatever the library
    wrapped it in (redis-py chains the OS error, pika keeps it in ``args`` / ``.exception``)."""
    todo: list[object] = [exc]
    seen = 0
    while todo and seen < 20:
        seen += 1
        item = todo.pop(0)
        if not isinstance(item, BaseException):
            continue
        if isinstance(item, OSError) and item.strerror:
            return item.strerror
        todo += [item.__cause__, item.__context__, getattr(item, "exception", None), *item.args]
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text
