"""Pool name (``-P``, ``worker_pool``) -> pool class."""

from __future__ import annotations

from runner.worker.aio import AsyncioPool
from runner.worker.pool import Pool
from runner.worker.prefork import PreforkPool
from runner.worker.solo import SoloPool
from runner.worker.threads import ThreadPool

POOLS: dict[str, type[Pool]] = {"prefork": PreforkPool, "threads": ThreadPool, "solo": SoloPool,
                                "asyncio": AsyncioPool}
