"""This process's logical clock: each event it sends carries the next tick (``clock``), and
``inspect clock`` reads it the same way, as Celery's Lamport clock is read."""

from __future__ import annotations

import itertools

_clock = itertools.count(1)


def clock_tick() -> int:
    """The clock, moved on by one."""
    return next(_clock)
