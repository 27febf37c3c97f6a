"""The worker's side of remote control: what the commands of :mod:`runner.control.commands`
read and change in a running :class:`~runner.worker.worker.Worker`.

Reads (requests, stats, queues) run in the control thread while the main loop goes on: they
copy what they look at (one C-level copy of a dict or list, atomic under the GIL) and never
change it. Changes are made in the main loop (see ``Spec.in_loop``), except :meth:`shutdown`,
which is safe from any thread.
"""

from __future__ import annotations

import os
import resource
import time
from typing import TYPE_CHECKING, Any

from runner.config.report import masked, report_text
from runner.control.commands import CommandError
from runner.events.clock import clock_tick
from runner.message import shown_arguments
from runner.worker.autoscale import Autoscaler
from runner.worker.prefork import PreforkPool
from runner.worker.prefork_consuming import ConsumingPool
from runner.worker.trace import delivery_info_of, signal_request

if TYPE_CHECKING:  # pragma: no cover
    from runner.task import Task
    from runner.worker.held import Held
    from runner.worker.worker import Worker


class Panel:
    def __init__(self, worker: Worker):
        self.worker = worker
        self.started_at = time.monotonic()

    # -- reading ------------------------------------------------------------------------------

    def requests(self, active: bool) -> list[dict]:
        """Celery's request dicts of the tasks running now (``active``) or held unstarted."""
        worker = self.worker
        pool = worker.pool
        running = list(worker.running.items())
        current = set(pool.current_jobs()) if pool.holds_jobs else None
        pids = pool.job_pids()
        now, clock = time.time(), time.monotonic()
        out = []
        for job, held in running:
            is_active = current is None or job in current
            if is_active == active:
                out.append(self.request(held, pids.get(job, os.getpid()), is_active,
                                        now - (clock - held.started)))
        if not active:
            out += [self.request(held, None, False, None) for held in list(worker.buffer)]
        return out

    def request(self, held: Held, pid: int | None, active: bool, started: float | None
                ) -> dict:
        message, worker = held.message, self.worker
        request = signal_request(worker.app, message, worker.hostname)
        info = delivery_info_of(held.delivery, message)
        args, kwargs = request.args, request.kwargs  # as Celery's; hidden ones as argsrepr
        if "argsrepr" in message.options or "kwargsrepr" in message.options:
            args, kwargs = shown_arguments(message.options, args, kwargs)
        return {"id": message.id, "name": message.task, "args": args,
                "kwargs": kwargs, "type": message.task, "hostname": worker.hostname,
                "time_start": started if active else None, "acknowledged": held.acked,
                "delivery_info": {"exchange": info["exchange"],
                                  "routing_key": info["routing_key"],
                                  "priority": info["priority"],
                                  "redelivered": info["redelivered"]},
                "worker_pid": pid}

    def revoked_ids(self) -> list[str]:
        return list(self.worker.revoked_ids)

    def registered(self, items: list[str]) -> list[str]:
        names = sorted(name for name in self.worker.app.tasks if not name.startswith("celery."))
        if not items:
            return names
        out = []
        for name in names:
            task = self.worker.app.tasks[name]
            fields = " ".join(f"{item}={value}" for item in items
                              if (value := getattr(task, item, None)) is not None)
            out.append(f"{name} [{fields}]" if fields else name)
        return out

    def queues(self) -> list[str]:
        return list(self.worker.options.queues)

    def pool_size(self) -> int:
        return self.worker.pool.size

    def stats(self) -> dict:
        worker = self.worker
        pool, url = worker.pool, worker.broker.url
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "broker": {"transport": worker.broker.scheme, "hostname": url.host,
                       "port": url.port, "virtual_host": url.path or None,
                       "userid": url.username or None},
            "clock": str(clock_tick()),
            "pid": os.getpid(),
            "pool": {"implementation": f"{type(pool).__module__}:{type(pool).__name__}",
                     "max-concurrency": pool.in_flight(),
                     "processes": pool.pids(),
                     "max-tasks-per-child": worker.options.max_tasks_per_child,
                     "max-memory-per-child": worker.options.max_memory_per_child,
                     "put-guarded-by-semaphore": False, "timeouts": [0, 0],
                     "autoscaler": ({"max": worker.autoscaler.max_size,
                                     "min": worker.autoscaler.min_size}
                                    if worker.autoscaler is not None else None)},
            "prefetch_count": worker.capacity,
            "rusage": {"utime": usage.ru_utime, "stime": usage.ru_stime,
                       "maxrss": usage.ru_maxrss, "minflt": usage.ru_minflt,
                       "majflt": usage.ru_majflt, "nvcsw": usage.ru_nvcsw,
                       "nivcsw": usage.ru_nivcsw},
            "total": dict(worker.received_counts()),
            "uptime": int(time.monotonic() - self.started_at),
        }

    def conf(self, with_defaults: bool) -> dict:
        conf = self.worker.app.conf
        return {key: masked(key, _plain(conf[key])) for key in conf.keys()
                if with_defaults or conf.source_of(key) is not None}

    def report(self) -> str:
        return report_text(self.worker.app)

    def task(self, name: str) -> Task:
        task = self.worker.app.tasks.get(name)
        if task is None:
            raise CommandError(f"unknown task {name!r} (not registered in this worker)")
        task.effective("time_limit")  # (task_annotations applied first, not over ours)
        return task

    # -- changing (in the main loop) ----------------------------------------------------------

    def _prefork(self, what: str) -> PreforkPool:
        pool = self.worker.pool
        if not isinstance(pool, PreforkPool):
            raise CommandError(f"{what}: the {self.worker.options.pool} pool has a fixed size "
                               f"(only the prefork pool can change it)")
        return pool

    def resize(self, size: int) -> None:
        pool = self._prefork("pool resize")
        worker = self.worker
        if worker.autoscaler is not None:  # the bounds follow, as Celery's autoscaler
            worker.autoscaler.max_size = max(worker.autoscaler.max_size, size)
            worker.autoscaler.min_size = min(worker.autoscaler.min_size, size)
        pool.resize(size)

    def autoscale(self, most: int, least: int) -> None:
        pool = self._prefork("autoscale")
        worker = self.worker
        if worker.autoscaler is None:
            worker.autoscaler = Autoscaler(pool, worker.broker.qsize, worker.options.queues,
                                           most, least, pushes=worker.broker.pushes)
        else:
            worker.autoscaler.max_size, worker.autoscaler.min_size = most, least
        if pool.size > most:
            pool.resize(most)
        elif pool.size < least:
            pool.resize(least)

    def set_queues(self, queues: list[str]) -> None:
        """Consume from ``queues`` from now on; each is declared first where the broker
        declares queues, so one it refuses is an error reply, and nothing changes."""
        worker = self.worker
        try:
            worker.broker.check(queues)
        except Exception as exc:  # noqa: BLE001 - the broker's own words, in the reply
            raise CommandError(f"the broker refused: {exc}") from None  # (it names the queue)
        worker.options.queues[:] = queues
        worker.consumer.queues[:] = queues
        if worker.autoscaler is not None:
            worker.autoscaler.queues[:] = queues
        if isinstance(worker.pool, ConsumingPool):  # its children were forked with the queues
            worker.pool.consume.queues = list(queues)
            worker.pool.renew()

    def renew_processes(self) -> None:
        self.worker.pool.renew()

    def shutdown(self) -> None:
        self.worker.stop()

    def revoke(self, ids: list[str], terminate: bool, signal: str) -> None:
        """Remember ``ids`` (the caller stored them in the backend, where the worker looks
        before each task starts); look now for those handed to the pool: waiting there to
        start (dropped), or, with ``terminate``, running."""
        for task_id in ids:
            self.worker.remember_revoked(task_id)
        self.worker.call_soon(self.worker.stop_revoked)

    def heartbeat(self) -> None:
        events = getattr(self.worker, "events", None)
        if events is not None:
            events.heartbeat(self.worker)

    def set_events(self, enabled: bool) -> str:
        events = getattr(self.worker, "events", None)
        if events is None:
            raise CommandError("events are not available in this worker")
        events.set_task_events(enabled)
        return "task events enabled" if enabled else "task events disabled"


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return _plain(value.model_dump(exclude_defaults=True))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return value
