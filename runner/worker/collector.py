"""The worker's settings for Python's cyclic garbage collector (``worker_gc_threshold``).

A worker holds thousands of objects for a short while: messages claimed ahead, jobs in flight,
and with ``-P asyncio`` a coroutine with its frames for each task running. With CPython's
default thresholds (700, 10, 10) those outlive a few collections of the young generations and
reach the oldest one within moments, so full collections come often, and each walks every object
start-up made as well (modules, the app, its tasks): pauses of 60-90 ms were measured in the
asyncio pool's processes at 10,000 tasks/s, several per second, with every task in the process
stopped meanwhile.

So, with the asyncio pool (or wherever ``worker_gc_threshold`` asks), once start-up is done
and before the pool forks: what start-up made is frozen
(``gc.freeze``: no collection walks it again, and the pool's children, forked after, inherit it
frozen, so the collector does not touch and copy those pages either), and the youngest
generation is collected every ``worker_gc_threshold`` allocations, the older ones less often, so
short-lived objects die between collections instead of being promoted. Nothing is left
uncollected: cycles are still found, a little later. 0 keeps Python's own settings, as the
other pools do by default: there, with a few objects per process in flight, these settings
made nothing measurably faster in the bench (prefork drain and RabbitMQ round trip, A/B runs
within the machine's noise), so they are not worth changing what those pools do.
"""

from __future__ import annotations

import gc

#: how many collections of the generation below trigger one of the next (generations 1 and 2)
OLDER_EVERY = (50, 100)
#: the youngest generation's threshold where worker_gc_threshold says nothing (-P asyncio)
ASYNCIO_THRESHOLD = 10_000


def threshold_for(setting: int | None, pool: str) -> int:
    """``worker_gc_threshold`` (``setting``) for ``pool``: None is ASYNCIO_THRESHOLD with the
    asyncio pool, else 0 (Python's own)."""
    if setting is not None:
        return setting
    return ASYNCIO_THRESHOLD if pool == "asyncio" else 0


def tune_collector(threshold: int) -> None:
    """Freeze what exists now and collect less often (see the module's docstring); nothing
    where ``threshold`` is 0."""
    if threshold <= 0:
        return
    gc.collect()  # (what start-up left as garbage is not frozen with the rest)
    gc.freeze()
    gc.set_threshold(threshold, *OLDER_EVERY)
