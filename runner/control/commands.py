"""The remote control commands a worker answers: a registry, Celery's names and reply shapes.

Each command is a function of a *panel* (the worker's side, see
:class:`runner.worker.panel.Panel`) and the command's arguments, registered with
:func:`command`. ``inspect`` commands only read (they run in the worker's listening thread, so
a worker whose every slot is busy still answers at once); ``control`` commands that change the
worker (``in_loop``) run in its main loop, between two looks at the pool.
A command that fails replies ``{"error": "..."}``; an unknown one too. New commands are one
decorated function here, never a branch in the worker.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runner.events.clock import clock_tick
from runner.exceptions import RunnerError


class CommandError(RunnerError):
    """A command refused (bad arguments, not possible here): its message is the reply's
    ``error``."""


@dataclass
class Spec:
    name: str
    fun: Callable[..., Any]
    kind: str  # "inspect" or "control"
    in_loop: bool = False  # runs in the worker's main loop (it changes the worker)
    #: positional arguments on the command line: (name, type); a last one named ``*x`` takes
    #: the rest as a list
    args: list[tuple[str, type]] = field(default_factory=list)
    help: str = ""


COMMANDS: dict[str, Spec] = {}


def command(kind: str, in_loop: bool = False, args: list[tuple[str, type]] | None = None,
            name: str | None = None) -> Callable:
    def register(fun: Callable) -> Callable:
        key = name or fun.__name__
        COMMANDS[key] = Spec(key, fun, kind, in_loop, list(args or []),
                             (fun.__doc__ or "").strip().splitlines()[0])
        return fun
    return register


def dispatch(panel: Any, method: str, arguments: dict) -> Any:
    """The reply of ``method`` (an error reply for an unknown command or a failure)."""
    spec = COMMANDS.get(method)
    if spec is None:
        return {"error": f"No such command: {method!r}"}
    try:
        return spec.fun(panel, **arguments)
    except CommandError as exc:
        return {"error": str(exc)}
    except TypeError as exc:
        return {"error": f"{method}: bad arguments: {exc}"}


# -- inspect ------------------------------------------------------------------------------------


@command("inspect")
def ping(panel) -> dict:
    """Answer pong: the worker is alive and listening."""
    return {"ok": "pong"}


@command("inspect")
def active(panel, safe: bool | None = None) -> list[dict]:
    """Tasks running now (id, name, args, started, pid)."""
    return panel.requests(active=True)


@command("inspect")
def reserved(panel, safe: bool | None = None) -> list[dict]:
    """Tasks this worker holds that have not started yet (prefetched)."""
    return panel.requests(active=False)


@command("inspect")
def scheduled(panel, safe: bool | None = None) -> list[dict]:
    """Tasks with an eta held by the worker (always none).

    runner's brokers hold delayed tasks until due: ``runner queues`` counts them."""
    return []


@command("inspect")
def revoked(panel) -> list[str]:
    """Ids of tasks this worker knows to be revoked."""
    return sorted(panel.revoked_ids())


@command("inspect", args=[("*taskinfoitems", str)])
def registered(panel, taskinfoitems: list[str] | None = None) -> list[str]:
    """Task names known (registered rate_limit: with it)."""
    return panel.registered(list(taskinfoitems or []))


@command("inspect")
def stats(panel) -> dict:
    """Pid, uptime, pool size and processes, tasks done."""
    return panel.stats()


@command("inspect")
def active_queues(panel) -> list[dict]:
    """The queues this worker consumes from."""
    return [queue_info(name) for name in panel.queues()]


@command("inspect")
def conf(panel, with_defaults: bool = False) -> dict:
    """Settings changed from the defaults (secrets masked)."""
    return panel.conf(with_defaults)


@command("inspect", args=[("*ids", str)])
def query_task(panel, ids: list[str] | str | None = None) -> dict:
    """Where tasks of these ids are: active or reserved."""
    wanted = {ids} if isinstance(ids, str) else set(ids or [])
    found = {}
    for state, is_active in (("active", True), ("reserved", False)):
        for request in panel.requests(active=is_active):
            if request["id"] in wanted:
                found[request["id"]] = [state, request]
    return found


@command("inspect")
def report(panel) -> dict:
    """What ``runner report`` prints, in the worker."""
    return {"ok": panel.report()}


@command("inspect")
def clock(panel) -> dict:
    """The worker's logical clock: it ticks with each event the process sends."""
    return {"clock": clock_tick()}


# -- control ------------------------------------------------------------------------------------


RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*$")


@command("control", args=[("task_name", str), ("rate_limit", str)])
def rate_limit(panel, task_name: str, rate_limit: str | int | float | None) -> dict:
    """Set a task's rate limit (10/m; 0: none), not enforced yet.

    runner does not enforce rate limits yet: the value is kept (and shown by ``registered
    rate_limit``)."""
    if rate_limit not in (None, "", 0, "0") and (
            not isinstance(rate_limit, str | int | float) or not RATE.match(str(rate_limit))):
        raise CommandError(f"Invalid rate limit string: {rate_limit!r} (expected N, N/s, N/m "
                           f"or N/h)")
    task = panel.task(task_name)
    task.rate_limit = rate_limit or None
    return {"ok": "new rate limit set successfully (runner does not enforce rate limits "
                  "yet)"}


@command("control", in_loop=True, args=[("task_name", str), ("soft", float), ("hard", float)])
def time_limit(panel, task_name: str, soft: float | None = None,
               hard: float | None = None) -> dict:
    """Set a task's soft and hard time limits (seconds).

    The pool's processes are renewed after their current task, so new tasks run with them."""
    for label, value in (("soft", soft), ("hard", hard)):
        if value is not None and (not isinstance(value, int | float) or value <= 0):
            raise CommandError(f"time_limit: {label} must be a number of seconds > 0, "
                               f"got {value!r}")
    task = panel.task(task_name)
    task.soft_time_limit, task.time_limit = soft, hard
    panel.renew_processes()
    return {"ok": "time limits set successfully"}


def _count(n: Any, what: str) -> int:
    try:
        count = int(n)
    except (TypeError, ValueError):
        raise CommandError(f"{what}: n must be a whole number, got {n!r}") from None
    if count < 1:
        raise CommandError(f"{what}: n must be at least 1, got {count}")
    return count


@command("control", in_loop=True, args=[("n", int)])
def pool_grow(panel, n: int = 1) -> dict:
    """Add n processes to the pool."""
    panel.resize(panel.pool_size() + _count(n, "pool_grow"))
    return {"ok": "pool will grow"}


@command("control", in_loop=True, args=[("n", int)])
def pool_shrink(panel, n: int = 1) -> dict:
    """Remove n processes from the pool (idle ones; never below 1)."""
    count, size = _count(n, "pool_shrink"), panel.pool_size()
    if size - count < 1:
        raise CommandError(f"pool_shrink: cannot shrink the pool of {size} process(es) by "
                           f"{count}: at least 1 must stay")
    panel.resize(size - count)
    return {"ok": "pool will shrink"}


@command("control", in_loop=True, args=[("max", int), ("min", int)])
def autoscale(panel, max: int, min: int | None = None) -> dict:  # noqa: A002 - Celery's
    """Set the autoscaler's bounds (max, min processes)."""
    most, least = _count(max, "autoscale max"), _count(min if min is not None else 1,
                                                       "autoscale min")
    if least > most:
        raise CommandError(f"autoscale: min ({least}) is above max ({most})")
    panel.autoscale(most, least)
    return {"ok": f"autoscale now max={most} min={least}"}


@command("control", in_loop=True, args=[("queue", str)])
def add_consumer(panel, queue: str, **options: Any) -> dict:
    """Start consuming from a queue."""
    if not isinstance(queue, str) or not queue.strip():
        raise CommandError(f"add_consumer: a queue name is needed, got {queue!r}")
    if queue in panel.queues():
        return {"ok": f"already consuming from {queue!r}"}
    panel.set_queues([*panel.queues(), queue])
    return {"ok": f"add consumer {queue}"}


@command("control", in_loop=True, args=[("queue", str)])
def cancel_consumer(panel, queue: str, **options: Any) -> dict:
    """Stop consuming from a queue."""
    queues = panel.queues()
    if queue not in queues:
        raise CommandError(f"cancel_consumer: not consuming from {queue!r} (consuming from "
                           f"{', '.join(queues)})")
    if len(queues) == 1:
        raise CommandError(f"cancel_consumer: {queue!r} is the only queue consumed; a worker "
                           f"needs one (use shutdown to stop it)")
    panel.set_queues([q for q in queues if q != queue])
    return {"ok": f"no longer consuming from {queue!r}"}


@command("control")
def shutdown(panel, msg: str | None = None) -> dict:
    """Warm shutdown of the worker: running tasks finish."""
    panel.shutdown()
    return {"ok": "shutting down"}


@command("control", args=[("*task_id", str)])
def revoke(panel, task_id: str | list[str], terminate: bool = False,
           signal: str = "SIGTERM") -> dict:
    """Revoke tasks (and with terminate, kill the process running them)."""
    ids = [task_id] if isinstance(task_id, str) else list(task_id)
    panel.revoke(ids, bool(terminate), str(signal))
    return {"ok": f"tasks {', '.join(ids)} flagged as revoked"}


@command("control")
def heartbeat(panel) -> dict:
    """Send a worker-heartbeat event now (with events enabled)."""
    panel.heartbeat()
    return {"ok": "heartbeat sent"}


@command("control")
def enable_events(panel) -> dict:
    """Start sending task events."""
    return {"ok": panel.set_events(True)}


@command("control")
def disable_events(panel) -> dict:
    """Stop sending task events."""
    return {"ok": panel.set_events(False)}


def queue_info(name: str) -> dict:
    """A queue as Celery's ``active_queues`` shows one (kombu's Queue fields)."""
    return {"name": name, "exchange": {"name": name, "type": "direct", "arguments": None,
                                       "durable": True, "passive": False, "auto_delete": False,
                                       "delivery_mode": None, "no_declare": False},
            "routing_key": name, "queue_arguments": None, "binding_arguments": None,
            "consumer_arguments": None, "durable": True, "exclusive": False,
            "auto_delete": False, "no_ack": False, "alias": None, "bindings": [],
            "no_declare": None, "expires": None, "message_ttl": None, "max_length": None,
            "max_length_bytes": None, "max_priority": None}
