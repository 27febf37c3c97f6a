"""``app.control``: Celery's remote control, on every transport (see :mod:`runner.control`).

Commands are broadcast to every worker (or the ``destination`` nodes); with ``reply=True`` the
caller waits up to ``timeout`` seconds (or until ``limit`` replies, by default one per named
destination) and gets a list of ``{node: reply}`` dicts, as Celery's ``broadcast``.
``app.control.inspect()`` merges them into one ``{node: reply}`` dict (None when no worker
answered), as Celery's ``Inspect``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from runner.brokers.fanout import Fanout, open_fanout
from runner.brokers.registry import broker_class
from runner.config.urls import parse_url
from runner.control.wire import PIDBOX, Command, Reply
from runner.exceptions import NotSupported

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner

logger = logging.getLogger("runner.control")

#: Celery's remote control commands runner does not have (see Control.__getattr__)
NOT_THERE = frozenset({"election", "pool_restart", "terminate",
                       "discard_all", "purge"})


def fanout_of(app: Runner, local: threading.local) -> Fanout:
    """This thread's fan-out on ``app``'s broker transport (one per process and thread)."""
    url = app.broker_url
    if getattr(local, "key", None) != (os.getpid(), url):
        parsed = parse_url(url)
        local.fanout = open_fanout(broker_class(parsed.scheme), parsed,
                                   app._transport_options())
        local.key = (os.getpid(), url)
    return local.fanout


def as_destination(destination: str | Sequence[str] | None) -> list[str] | None:
    if destination is None:
        return None
    return [destination] if isinstance(destination, str) else list(destination)


class Control:
    """``app.control``: Celery's names, arguments and reply shapes."""

    def __init__(self, app: Runner):
        self.app = app
        self._local = threading.local()

    def fanout(self) -> Fanout:
        return fanout_of(self.app, self._local)

    # -- the channel --------------------------------------------------------------------------

    def broadcast(self, command: str, arguments: dict | None = None,
                  destination: str | Sequence[str] | None = None, connection: Any = None,
                  reply: bool = False, timeout: float = 1.0, limit: int | None = None,
                  callback: Callable[[dict], Any] | None = None, channel: Any = None,
                  pattern: str | None = None, matcher: str | None = None,
                  **extra_kwargs: Any) -> list[dict] | None:
        """Send ``command`` to the workers (``destination``: only these nodes). With
        ``reply``, the ``{node: reply}`` answers that came within ``timeout`` seconds."""
        if pattern is not None or matcher is not None:
            raise NotSupported("broadcast(pattern=..., matcher=...): name the nodes in "
                               "destination instead")
        nodes = as_destination(destination)
        fanout = self.fanout()
        box = fanout.reply_box() if reply else None
        try:
            message = Command(command, {**(arguments or {}), **extra_kwargs}, nodes,
                              box.address if box is not None else None, uuid.uuid4().hex)
            fanout.publish(PIDBOX, message.encode(), ttl=max(timeout, 1.0) + 1.0)
            if box is None:
                return None
            if limit is None and nodes:
                limit = len(nodes)
            return self._collect(box, message.ticket, timeout, limit, callback)
        finally:
            if box is not None:
                box.close()

    @staticmethod
    def _collect(box, ticket: str, timeout: float, limit: int | None,
                 callback: Callable[[dict], Any] | None) -> list[dict]:
        replies: list[dict] = []
        deadline = time.monotonic() + timeout
        while limit is None or len(replies) < limit:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for body in box.get(left):
                answer = Reply.decode(body)
                if answer is None or answer.ticket != ticket:
                    logger.debug("control: dropped a reply that is not ours: %r", body[:200])
                    continue
                entry = {answer.node: answer.reply}
                replies.append(entry)
                if callback is not None:
                    callback(entry)
        return replies

    def inspect(self, destination: str | Sequence[str] | None = None, timeout: float = 1.0,
                callback: Callable | None = None, connection: Any = None, app: Any = None,
                limit: int | None = None, pattern: str | None = None,
                matcher: str | None = None) -> Inspect:
        return Inspect(self, destination, timeout, callback, limit)

    # -- commands -----------------------------------------------------------------------------

    def ping(self, destination=None, timeout: float = 1.0, **kwargs) -> list[dict]:
        return self.broadcast("ping", reply=True, destination=destination, timeout=timeout,
                              **kwargs) or []

    def revoke(self, task_id: str | list[str], destination=None, terminate: bool = False,
               signal: str = "SIGTERM", **kwargs) -> list[dict] | None:
        """Revoke tasks: kept in the result backend, where every worker (also one started
        later) looks before a task starts, then broadcast so that running workers act now."""
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        self.app.backend.revoke(ids, terminate=terminate, signal=signal)
        return self.broadcast("revoke", {"task_id": ids, "terminate": terminate,
                                         "signal": signal}, destination=destination, **kwargs)

    def revoke_by_stamped_headers(self, headers: dict, terminate: bool = False,
                                  signal: str = "SIGTERM", **kwargs: Any) -> None:
        """Revoke every task stamped with one of ``headers``: kept in the result backend,
        where a worker looks before a stamped task starts (see runner.canvas.stamping; a
        task already running is not stopped)."""
        self.app._revoke_stamped(headers, terminate=terminate, signal=signal)

    def rate_limit(self, task_name: str, rate_limit: str | int | float | None,
                   destination=None, **kwargs) -> list[dict] | None:
        return self.broadcast("rate_limit", {"task_name": task_name,
                                             "rate_limit": rate_limit},
                              destination=destination, **kwargs)

    def time_limit(self, task_name: str, soft: float | None = None, hard: float | None = None,
                   destination=None, **kwargs) -> list[dict] | None:
        kwargs.setdefault("reply", True)
        return self.broadcast("time_limit", {"task_name": task_name, "soft": soft,
                                             "hard": hard}, destination=destination, **kwargs)

    def pool_grow(self, n: int = 1, destination=None, **kwargs) -> list[dict] | None:
        return self.broadcast("pool_grow", {"n": n}, destination=destination, **kwargs)

    def pool_shrink(self, n: int = 1, destination=None, **kwargs) -> list[dict] | None:
        return self.broadcast("pool_shrink", {"n": n}, destination=destination, **kwargs)

    def autoscale(self, max: int, min: int, destination=None,  # noqa: A002 - Celery's names
                  **kwargs) -> list[dict] | None:
        return self.broadcast("autoscale", {"max": max, "min": min},
                              destination=destination, **kwargs)

    def add_consumer(self, queue: str, exchange: str | None = None,
                     exchange_type: str = "direct", routing_key: str | None = None,
                     options: dict | None = None, destination=None,
                     **kwargs) -> list[dict] | None:
        return self.broadcast("add_consumer", {"queue": queue}, destination=destination,
                              **kwargs)

    def cancel_consumer(self, queue: str, destination=None, **kwargs) -> list[dict] | None:
        return self.broadcast("cancel_consumer", {"queue": queue}, destination=destination,
                              **kwargs)

    def shutdown(self, destination=None, **kwargs) -> list[dict] | None:
        return self.broadcast("shutdown", destination=destination, **kwargs)

    def heartbeat(self, destination=None, **kwargs) -> list[dict] | None:
        return self.broadcast("heartbeat", destination=destination, **kwargs)

    def enable_events(self, destination=None, **kwargs) -> list[dict] | None:
        return self.broadcast("enable_events", destination=destination, **kwargs)

    def disable_events(self, destination=None, **kwargs) -> list[dict] | None:
        return self.broadcast("disable_events", destination=destination, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in NOT_THERE:
            raise NotSupported(f"app.control.{name}: this remote control command of Celery's "
                               f"is not in runner; see the README, 'Remote control'")
        raise AttributeError(name)


class Inspect:
    """``app.control.inspect()``: each method returns ``{node: reply}``, or None when no
    worker answered within the timeout (as Celery's)."""

    def __init__(self, control: Control, destination=None, timeout: float = 1.0,
                 callback: Callable | None = None, limit: int | None = None):
        self.control = control
        self.destination = destination
        self.timeout = timeout
        self.callback = callback
        self.limit = limit

    def _request(self, command: str, **kwargs: Any) -> dict | None:
        replies = self.control.broadcast(command, kwargs, destination=self.destination,
                                         reply=True, timeout=self.timeout, limit=self.limit,
                                         callback=self.callback)
        if not replies:
            return None
        merged: dict = {}
        for entry in replies:
            merged.update(entry)
        if isinstance(self.destination, str):
            return merged.get(self.destination)
        return merged

    def ping(self) -> dict | None:
        return self._request("ping")

    def active(self, safe: bool | None = None) -> dict | None:
        return self._request("active")

    def reserved(self, safe: bool | None = None) -> dict | None:
        return self._request("reserved")

    def scheduled(self, safe: bool | None = None) -> dict | None:
        return self._request("scheduled")

    def revoked(self) -> dict | None:
        return self._request("revoked")

    def registered(self, *taskinfoitems: str) -> dict | None:
        return self._request("registered", taskinfoitems=list(taskinfoitems))

    registered_tasks = registered

    def stats(self) -> dict | None:
        return self._request("stats")

    def active_queues(self) -> dict | None:
        return self._request("active_queues")

    def conf(self, with_defaults: bool = False) -> dict | None:
        return self._request("conf", with_defaults=with_defaults)

    def query_task(self, *ids: str) -> dict | None:
        if len(ids) == 1 and isinstance(ids[0], list | tuple):
            ids = tuple(ids[0])
        return self._request("query_task", ids=list(ids))

    def report(self) -> dict | None:
        return self._request("report")

    def clock(self) -> dict | None:
        return self._request("clock")
