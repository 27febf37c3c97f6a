"""Pool name (``-P``, ``worker_pool``) -> pool class; for ``prefork``, which of its two
kinds (see :mod:`runner.worker.prefork`)."""

from __future__ import annotations

from runner.worker.aio import AsyncioPool
from runner.worker.aio_procs import AsyncioProcessPool
from runner.worker.pool import Pool
from runner.worker.prefork import PreforkPool
from runner.worker.prefork_consuming import ConsumingPool
from runner.worker.prefork_fed import FedPool
from runner.worker.solo import SoloPool
from runner.worker.threads import ThreadPool

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
