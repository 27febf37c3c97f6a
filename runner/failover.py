"""Failover lists: several brokers given as one URL (``redis://a/0;redis://b/0``), as Celery.

A process uses one server of the list at a time; when connecting to it fails, it moves to the
next one in the order ``broker_failover_strategy`` gives (``round-robin``: the list's order,
again and again; ``shuffle``: a random order, then round-robin; or a callable taking the URLs
and returning an iterator, as kombu's). Retries, backoff and the first connection's timeout
are runner.reconnect's, as for one server: each retry goes to the next server. The log says
which server a process moves to.

Every server of a list must hold the same data for this to lose nothing (a Redis replica
promoted by hand, RabbitMQ nodes of one cluster with quorum queues); for Redis with automatic
promotion, Sentinel (``sentinel://``) is the better tool.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from runner.config.urls import URL
from runner.exceptions import ConfigError

logger = logging.getLogger("runner.failover")


def _shuffle_cycle(urls: Sequence[URL]) -> Iterator[URL]:
    order = list(urls)
    random.shuffle(order)
    return itertools.cycle(order)


STRATEGIES: dict[str, Callable[[Sequence[URL]], Iterator[URL]]] = {
    "round-robin": itertools.cycle, "round_robin": itertools.cycle, "shuffle": _shuffle_cycle,
}


def strategy_named(strategy: Any) -> Callable[[Sequence[URL]], Iterator[URL]]:
    if callable(strategy):
        return strategy
    if strategy in STRATEGIES:
        return STRATEGIES[strategy]
    raise ConfigError(f"broker_failover_strategy {strategy!r}: use 'round-robin', 'shuffle' "
                      f"or a callable taking the URLs and returning an iterator of them")


class Failover:
    """Which server of a failover list this process uses now (shared by its connections)."""

    def __init__(self, url: URL, strategy: Any = "round-robin", server: str = "broker"):
        self.url, self.server = url, server
        self._order = iter(strategy_named(strategy)(list(url.all)))
        self._lock = threading.Lock()
        self.current: URL = self._next()

    def _next(self) -> URL:
        try:
            found = next(self._order)
        except StopIteration:
            raise ConfigError(f"broker_failover_strategy gave no more URLs for "
                              f"{self.url.masked}") from None
        if not isinstance(found, URL):  # a user's callable may give strings
            from runner.config.urls import parse_url

            found = parse_url(str(found))
        return found

    def lost(self, url: URL) -> None:
        """Connecting to ``url`` failed: the next connection goes to the next server (once,
        however many connections saw the same server fail)."""
        with self._lock:
            if url is not self.current:
                return
            self.current = self._next()
            logger.warning("%s %s is lost; using %s now (failover list of %d)", self.server,
                           url.masked, self.current.masked, len(self.url.all))


_in_use: dict[tuple[int, str], Failover] = {}


def failover_of(url: URL, options: dict, server: str) -> Failover:
    """This process's one :class:`Failover` of a list (its connections move together)."""
    key = (os.getpid(), url.raw)
    found = _in_use.get(key)
    if found is None:
        found = _in_use[key] = Failover(url, options.get("failover_strategy", "round-robin"),
                                        server)
    return found
