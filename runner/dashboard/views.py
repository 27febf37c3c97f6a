"""Workers, tasks and queues as plain JSON-able dicts: the API returns them, the pages render
them (one source for both)."""

from __future__ import annotations

import time
from typing import Any

from runner.dashboard.context import Context
from runner.dashboard.errors import not_found
from runner.dashboard.filters import TaskFilter
from runner.events.state import Task

HIDDEN = "***"
TASK_TIMES = ("sent", "received", "started", "succeeded", "failed", "retried", "revoked",
              "rejected")


#: a worker's pool (``inspect stats``' "module:Class") -> its ``-P`` name
POOL_KINDS = {"prefork": "prefork", "aio": "asyncio", "threads": "threads", "solo": "solo"}


def pool_of(stats: dict | None) -> tuple[str | None, int | None]:
    """(pool kind as ``-P`` names it, its size) from a worker's ``inspect stats`` reply."""
    pool = (stats or {}).get("pool") or {}
    module, _, name = str(pool.get("implementation") or "").partition(":")
    last = module.rsplit(".", 1)[-1]
    kind = next((k for prefix, k in POOL_KINDS.items() if last.startswith(prefix)),
                name.removesuffix("Pool").lower() or None)
    return kind, pool.get("max-concurrency")


def workers(ctx: Context) -> list[dict[str, Any]]:
    snapshot, _history = ctx.poller.current()
    now = time.time()
    rows = []
    for worker, failed in ctx.store.workers():
        kind, size = pool_of(snapshot.stats.get(worker.hostname))
        last = worker.heartbeats[-1] if worker.heartbeats else None
        rows.append({
            "hostname": worker.hostname, "status": "online" if worker.alive else "offline",
            "heartbeat_age": round(now - last, 1) if last else None,
            "pool": kind, "concurrency": size, "active": worker.active,
            "processed": worker.processed, "failed": failed,
            "loadavg": worker.loadavg or [], "queues": snapshot.consumers.get(worker.hostname,
                                                                           []),
            "version": worker.sw_ver, "pid": worker.pid})
    return rows


def task_dict(task: Task, hide_args: bool, full: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": task.uuid, "name": task.name, "state": task.state, "worker": task.worker,
        "queue": getattr(task, "queue", None), "args": task.args, "kwargs": task.kwargs,
        "result": task.result, "exception": task.exception, "runtime": task.runtime,
        "retries": task.retries, "timestamp": task.timestamp,
        "parent_id": task.parent_id, "root_id": task.root_id}
    if full:
        data["traceback"] = task.traceback
        data["eta"], data["expires"] = task.eta, task.expires
        data["times"] = {k: getattr(task, k) for k in TASK_TIMES if getattr(task, k)}
    if hide_args:
        for key in ("args", "kwargs", "result"):
            if data[key] is not None:
                data[key] = HIDDEN
    return data


def tasks(ctx: Context, given: TaskFilter) -> dict[str, Any]:
    total, page = ctx.store.tasks(given.query())
    return {"total": total, "offset": given.offset, "limit": given.limit,
            "tasks": [task_dict(t, ctx.options.hide_args) for t in page]}


def task(ctx: Context, task_id: str) -> dict[str, Any]:
    found, children = ctx.store.task(task_id)
    if found is None:
        raise not_found(f"no task {task_id!r} among the {ctx.options.max_tasks} kept "
                        f"(--max-tasks)")
    data = task_dict(found, ctx.options.hide_args, full=True)
    data["children"] = [{"id": c.uuid, "name": c.name, "state": c.state} for c in children]
    return data


def queues(ctx: Context) -> list[dict[str, Any]]:
    snapshot, history = ctx.poller.current()
    rows = []
    for name, counts in sorted(snapshot.queues.items()):
        rate_in, rate_out = ctx.store.queue_rates(name)
        rows.append({"name": name, **counts, "rate_in": round(rate_in, 3),
                     "rate_out": round(rate_out, 3),
                     "history": [[round(when), point.get(name, 0)] for when, point in history
                                 if name in point]})
    return rows


def overview(ctx: Context) -> dict[str, Any]:
    snapshot, _ = ctx.poller.current()
    return {"workers_online": sum(1 for w, _f in ctx.store.workers() if w.alive),
            **ctx.store.counts(), "events_connected": ctx.store.connected.is_set(),
            "polled": snapshot.taken or None, "poll_error": snapshot.error}
