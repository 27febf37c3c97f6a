"""Rate limits that hold across every worker and host: ``rate_limit: 100/m`` on a pipeline step,
or ``@app.task(rate_limit="100/m", rate_limit_scope="global")`` on a task.

Celery's rate limits are per worker; these are global, as Dramatiq's and Airflow's pools are.
Instead of workers asking a shared counter before each task, the sender books each message a
slot: one atomic change (``update_data``) of the limit's "next free time" in the result backend
gives N messages the times ``t, t + 1/rate, ...``, sent with that ``eta``, and the broker holds
each until then. Two runs sending at the same moment book distinct slots; the limit holds
whichever worker (or how many) takes the tasks. A task retried after failing is not booked
again (its retry delay applies). Slots are booked when the tasks are sent: tasks held up past
their slots (no worker running, a backlog) start as soon as a worker is free, together.
"""

from __future__ import annotations

import re
import time
from typing import Any

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*$")
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_rate(text: Any) -> float:
    """Tasks per second of Celery's rate format: ``10/s``, ``100/m``, ``1000/h`` (a bare
    number is per second); ValueError for anything else."""
    match = _RATE.match(str(text)) if isinstance(text, str | int | float) and not isinstance(
        text, bool) else None
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"rate limit {text!r} is not N/s, N/m or N/h with N > 0 "
                         f"(e.g. '100/m')")
    return float(match.group(1)) / _PER[match.group(2)]


def limit_key(scope: str) -> str:
    return f"ratelimit:{scope}"


def book(backend: Any, scope: str, rate: str, count: int) -> list[float]:
    """The times (epoch s) at which ``count`` tasks of ``scope`` may start, booked at once."""
    interval = 1.0 / parse_rate(rate)
    now = time.time()
    slots: list[float] = []

    def change(raw: bytes | None) -> bytes:
        start = max(now, float(raw) if raw else 0.0)
        slots[:] = [start + i * interval for i in range(count)]
        return repr(start + count * interval).encode()

    backend.update_data(limit_key(scope), change)
    return slots
