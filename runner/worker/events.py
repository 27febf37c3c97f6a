"""The worker's events: ``worker-online``, ``worker-heartbeat`` every ``worker_heartbeat``
seconds, ``worker-offline``; with ``-E`` (``worker_send_task_events``) the ``task-*`` events,
from the process where each happens (a prefork child sends those of the tasks it runs).

Task events are signal receivers (see :mod:`runner.signals`), connected only while task
events are on: with them off, the worker's hot path is unchanged (each signal call site tests
``if signal.receivers`` first). They are connected before the pool forks, so the children
inherit them and their dispatcher (which starts afresh in each child, see
:mod:`runner.events.dispatcher`); a child publishes what it buffered before it exits.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from typing import TYPE_CHECKING, Any

from runner import states
from runner.events.dispatcher import EventDispatcher, safe_repr
from runner.signals import (
    task_failure,
    task_postrun,
    task_prerun,
    task_received,
    task_rejected,
    task_retry,
    task_revoked,
    worker_process_shutdown,
)
from runner.version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from runner.worker.worker import Worker

#: the dispatcher task events go through, in this process (and its forked children)
_dispatcher: EventDispatcher | None = None
_started: dict[str, float] = {}  # task id -> when it started (perf_counter), for runtime


def _put(type: str, fields: dict[str, Any]) -> None:  # noqa: A002
    dispatcher = _dispatcher
    if dispatcher is not None:
        dispatcher.put(type, fields)


def on_received(sender=None, request=None, **kwargs: Any) -> None:
    options = request.options or {}  # argsrepr / kwargsrepr where given (hide_args: ***)
    _put("task-received", {
        "uuid": request.id, "name": request.task,
        "args": options.get("argsrepr") or safe_repr(request.args),
        "kwargs": options.get("kwargsrepr") or safe_repr(request.kwargs),
        "root_id": request.root_id, "parent_id": request.parent_id,
        "retries": request.retries, "eta": request.eta, "expires": request.expires,
        "routing_key": (getattr(request, "delivery_info", None) or {}).get("routing_key")})


def on_prerun(sender=None, task_id=None, **kwargs: Any) -> None:
    _started[task_id] = time.perf_counter()
    _put("task-started", {"uuid": task_id})


def on_postrun(sender=None, task_id=None, retval=None, state=None, **kwargs: Any) -> None:
    began = _started.pop(task_id, None)
    if state == states.SUCCESS:
        _put("task-succeeded", {
            "uuid": task_id, "result": safe_repr(retval),
            "runtime": time.perf_counter() - began if began is not None else None})


def on_failure(sender=None, task_id=None, exception=None, einfo=None, **kwargs: Any) -> None:
    _put("task-failed", {"uuid": task_id, "exception": safe_repr(exception),
                         "traceback": getattr(einfo, "traceback", None)})


def on_retry(sender=None, request=None, reason=None, einfo=None, **kwargs: Any) -> None:
    _put("task-retried", {"uuid": getattr(request, "id", None),
                          "exception": safe_repr(reason),
                          "traceback": getattr(einfo, "traceback", None)})


def on_revoked(sender=None, request=None, terminated=False, signum=None, expired=False,
               **kwargs: Any) -> None:
    _put("task-revoked", {"uuid": getattr(request, "id", None), "terminated": terminated,
                          "signum": signum, "expired": expired})


def on_rejected(sender=None, message=None, exc=None, **kwargs: Any) -> None:
    _put("task-rejected", {"uuid": None, "requeue": False, "reason": safe_repr(exc)})


def on_child_exit(sender=None, **kwargs: Any) -> None:
    if _dispatcher is not None:
        _dispatcher.flush()


RECEIVERS = ((task_received, on_received), (task_prerun, on_prerun),
             (task_postrun, on_postrun), (task_failure, on_failure), (task_retry, on_retry),
             (task_revoked, on_revoked), (task_rejected, on_rejected),
             (worker_process_shutdown, on_child_exit))


def heartbeat_every(app) -> float:
    """Seconds between two worker-heartbeat events (``worker_heartbeat``)."""
    return float(app.conf.worker_heartbeat)


def task_events_on(app) -> bool:
    """Whether workers send task events (``worker_send_task_events``, the worker's -E)."""
    return bool(app.conf.worker_send_task_events)


class WorkerEvents:
    """One worker's events (see the module docstring)."""

    def __init__(self, worker: Worker, heartbeat: bool = True):
        app = worker.app
        self.worker = worker
        self.dispatcher = EventDispatcher(app, worker.hostname)
        app.events.hostname = worker.hostname  # (its pipelines' and beat's events name it)
        self.freq = heartbeat_every(app)
        self.task_events = task_events_on(app)
        self.heartbeats = heartbeat
        self._stop = threading.Event()
        self._heart: threading.Thread | None = None

    def start(self) -> None:
        """Before the pool forks: task events connected, so the children send them too."""
        if self.task_events:
            self.set_task_events(True, renew=False)

    def started(self) -> None:
        """Once the worker is ready: worker-online, then heartbeats."""
        self.dispatcher.send("worker-online", **self._info())
        self.dispatcher.flush()
        if self.heartbeats:
            self._heart = threading.Thread(target=self._beat, name="runner-heart", daemon=True)
            self._heart.start()

    def _info(self) -> dict[str, Any]:
        worker = self.worker
        try:
            loadavg = [round(x, 2) for x in os.getloadavg()]
        except OSError:  # pragma: no cover - no load average here
            loadavg = []
        return {"freq": self.freq, "sw_ident": "runner", "sw_ver": __version__,
                "sw_sys": platform.system(), "active": len(worker.running),
                "processed": sum(worker.received_counts().values()), "loadavg": loadavg}

    def heartbeat(self, worker: Worker | None = None) -> None:
        self.dispatcher.send("worker-heartbeat", **self._info())
        self.dispatcher.flush()  # (from the heart's thread: monitors see it now)

    def _beat(self) -> None:
        while not self._stop.wait(self.freq):
            self.heartbeat()

    def set_task_events(self, enabled: bool, renew: bool = True) -> None:
        """Start or stop task events (``enable_events`` / ``disable_events``); the pool's
        processes are renewed so that theirs follow."""
        global _dispatcher
        if enabled:
            _dispatcher = self.dispatcher
            for signal, receiver in RECEIVERS:
                signal.connect(receiver, weak=False, dispatch_uid=f"runner.events.{signal.name}")
        else:
            for signal, receiver in RECEIVERS:
                signal.disconnect(receiver, dispatch_uid=f"runner.events.{signal.name}")
        self.task_events = enabled
        if renew:
            self.worker.pool.renew()

    def stop(self) -> None:
        """worker-offline, and what is buffered published."""
        self._stop.set()
        if self._heart is not None:
            self._heart.join(2)
        self.dispatcher.send("worker-offline", **self._info())
        self.dispatcher.close()
