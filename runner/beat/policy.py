"""Which scheduled times of an entry fire, given what was decided before (the catch-up policy).

A fire at most ``grace`` seconds late is *on time* and always fires: that covers a slow loop, a
restart and the handover to a standby. Older fires were *missed* (beat was down); the entry's
``catchup`` decides: ``skip`` drops them, ``latest`` runs the most recent one once, ``all`` runs
them all, oldest first, but at most ``catchup_limit`` (the most recent ones).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

from runner.beat.entries import Entry

#: enumerating missed fires stops here (a one-second interval missed for 11 days)
MAX_SCAN = 1_000_000


@dataclass
class Plan:
    fires: list[datetime] = field(default_factory=list)  # to send, oldest first
    dropped: int = 0  # missed fires the policy does not run


def plan(entry: Entry, cursor: float, now: float, grace: float) -> Plan:
    """The fires of ``entry`` scheduled in ``(cursor, now]`` that are to be sent."""
    tz = entry.tz
    on_time_from = now - grace
    result = Plan()
    if entry.catchup == "skip" and cursor < on_time_from:
        first = entry.schedule.next_after(datetime.fromtimestamp(cursor, tz), tz)
        result.dropped = -1 if first.timestamp() < on_time_from else 0  # skipping: uncounted
        cursor = on_time_from
    keep = 1 if entry.catchup == "latest" else entry.catchup_limit
    missed: deque[datetime] = deque(maxlen=keep)
    when = datetime.fromtimestamp(cursor, tz)
    for _ in range(MAX_SCAN):
        when = entry.schedule.next_after(when, tz)
        stamp = when.timestamp()
        if stamp > now:
            break
        if stamp < on_time_from:
            if len(missed) == missed.maxlen:
                result.dropped += 1
            missed.append(when)
        else:
            result.fires.append(when)
    result.fires[:0] = list(missed)
    return result
