"""Pool name (``-P``, ``worker_pool``) -> pool class; for ``prefork``, which of its two
kinds (see :mod:`runner.worker.prefork`); and the worker's pool, built from its options."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from runner.worker.aio import AsyncioPool
from runner.worker.aio_procs import AsyncioProcessPool
from runner.worker.child import ConsumeOptions
from runner.worker.pool import Pool
from runner.worker.prefork import PreforkPool
from runner.worker.prefork_consuming import ConsumingPool
from runner.worker.prefork_fed import FedPool
from runner.worker.solo import SoloPool
from runner.worker.threads import ThreadPool

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner
    from runner.worker.consumer import Waker
    from runner.worker.held import WorkerOptions
    from runner.worker.ownership import Ownership

POOLS: dict[str, type[Pool]] = {"prefork": PreforkPool, "threads": ThreadPool, "solo": SoloPool,
                                "asyncio": AsyncioProcessPool}


def pool_class(name: str, processes: int = 1) -> type[Pool]:
    """The class of pool ``name``; ``-P asyncio --processes 0`` runs its event loop in the
    worker's own process (no process to replace when a task does not stop)."""
    if name == "asyncio" and processes == 0:
        return AsyncioPool
    return POOLS[name]


def prefork_kind(children_consume: bool) -> type[PreforkPool]:
    """The prefork pool whose children fetch for themselves, or the one the worker feeds."""
    return ConsumingPool if children_consume else FedPool


def build_pool(kind: type[Pool], app: Runner, options: WorkerOptions, hostname: str,
               ownership: Ownership, waker: Waker, job_ids: itertools.count) -> Pool:
    """The worker's pool of class ``kind`` (:func:`pool_class`), not started: with the
    prefork pool, children that claim their own share of the prefetch if ``ownership`` says
    they consume."""
    settings: dict[str, Any] = {"waker": waker, "job_ids": job_ids,
                                "batch_size": options.prefetch}
    if options.pool == "asyncio" and options.processes:
        settings["processes"] = options.processes
    if issubclass(kind, PreforkPool):
        kind = prefork_kind(ownership.children_consume)
        if ownership.children_consume:
            settings["consume"] = ConsumeOptions(
                options.queues, hostname, options.prefetch, options.max_tasks_per_child,
                options.max_memory_per_child, main_acks_early=ownership.main_acks_early)
    return kind(app, options.concurrency, hostname, app.task_accept,
                options.max_tasks_per_child, options.max_memory_per_child, **settings)
