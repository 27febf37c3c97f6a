"""Pool name (``-P``, ``worker_pool``) -> pool class."""

from __future__ import annotations

from runner.worker.aio import AsyncioPool
from runner.worker.aio_procs import AsyncioProcessPool
from runner.worker.pool import Pool
from runner.worker.prefork import PreforkPool
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
