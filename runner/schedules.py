"""Schedules for ``runner beat``: ``crontab`` (as Celery's) and ``schedule`` (an interval).

A schedule answers one question: given the last scheduled fire time (an aware datetime), when is
the next one? Times come back as aware datetimes in the schedule's timezone.

Cron fields are parsed and matched by ``croniter`` (ranges, steps, lists, month and day names);
croniter is fed *naive wall-clock* times and runner maps each wall-clock match to an instant,
so the daylight-saving policy is ours and explicit:

- a wall-clock time that does not exist (spring forward: 02:30 in Europe/Oslo on the last Sunday
  of March) fires at the first valid time after the gap (03:00 local), once;
- a wall-clock time that happens twice (fall back: 02:30 on the last Sunday of October) fires
  once, at its first occurrence. Every wall-clock match fires at most once.

Intervals (``schedule(timedelta(minutes=15))``, ``every: 15m``) are absolute time, unaffected by
DST, on a grid anchored at the Unix epoch: ``every: 15m`` fires at :00, :15, :30 and :45 UTC,
whichever process computes it, so two beats agree on the scheduled times.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from runner.exceptions import ConfigError

_EVERY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DST_SPAN = timedelta(hours=3)  # longer than any clock change
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def zone(name: str | None) -> ZoneInfo:
    """The IANA zone ``name`` (UTC for None); ConfigError naming it when unknown."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown timezone {name!r} (use an IANA name like Europe/Oslo)"
                          ) from None


class BaseSchedule:
    """What beat asks of a schedule. ``tz`` None means: the zone beat gives it (the app's)."""

    tz: tzinfo | None = None

    def next_after(self, last: datetime, tz: tzinfo | None = None) -> datetime:
        """The first fire time strictly after ``last`` (aware), in the schedule's zone."""
        raise NotImplementedError

    def upcoming(self, after: datetime, count: int, tz: tzinfo | None = None) -> list[datetime]:
        times, current = [], after
        for _ in range(count):
            current = self.next_after(current, tz)
            times.append(current)
        return times

    @property
    def key(self) -> str:
        """A stable description: beat restarts an entry's timeline when it changes."""
        raise NotImplementedError


class schedule(BaseSchedule):  # noqa: N801 - Celery's name
    """Every ``run_every`` (seconds or a timedelta), on a grid anchored at the Unix epoch."""

    def __init__(self, run_every: float | timedelta, relative: bool = False):
        seconds = run_every.total_seconds() if isinstance(run_every, timedelta) else run_every
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
            raise ConfigError(f"an interval must be a positive number of seconds or a "
                              f"timedelta (given {run_every!r})")
        self.seconds = float(seconds)
        self.relative = relative

    @property
    def run_every(self) -> timedelta:
        return timedelta(seconds=self.seconds)

    def next_after(self, last: datetime, tz: tzinfo | None = None) -> datetime:
        step = int(last.timestamp() // self.seconds) + 1
        return datetime.fromtimestamp(step * self.seconds, UTC).astimezone(tz or UTC)

    @property
    def key(self) -> str:
        return f"every {self.seconds:g}s"

    def __repr__(self) -> str:
        return f"<freq: {self.run_every}>"


class crontab(BaseSchedule):  # noqa: N801 - Celery's name
    """Celery's ``crontab``: each field is cron syntax (``'*/15'``, ``'1-5'``, ``'mon-fri'``,
    ``'jan,jul'``), an int, or an iterable of ints. Like Celery, a day must match both
    ``day_of_month`` and ``day_of_week`` (a cron *string* keeps cron's "either" rule)."""

    def __init__(self, minute: Any = "*", hour: Any = "*", day_of_week: Any = "*",
                 day_of_month: Any = "*", month_of_year: Any = "*", tz: str | None = None,
                 *, day_or: bool = False):
        fields = [_field(v) for v in (minute, hour, day_of_month, month_of_year, day_of_week)]
        self.expression = " ".join(fields)
        self.tz = zone(tz) if tz else None
        self.day_or = day_or
        try:
            croniter(self.expression, datetime(2000, 1, 1), day_or=day_or)
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"bad cron expression {self.expression!r} (minute hour "
                              f"day-of-month month day-of-week): {exc}") from None

    @classmethod
    def from_string(cls, expression: str, tz: str | None = None) -> crontab:
        """``'0 3 * * mon-fri'``: five fields, cron's day-of-month *or* day-of-week rule."""
        fields = expression.split()
        if len(fields) != 5:
            raise ConfigError(f"cron string {expression!r} needs 5 fields: minute hour "
                              f"day-of-month month day-of-week, e.g. '0 7 * * mon-fri'")
        minute, hour, dom, month, dow = fields
        return cls(minute, hour, dow, dom, month, tz=tz, day_or=True)

    def next_after(self, last: datetime, tz: tzinfo | None = None) -> datetime:
        tz = self.tz or tz or UTC
        after = last.astimezone(tz)
        wall = after.replace(tzinfo=None, fold=0)
        # near a fall back the wall clock of a later instant can be earlier: start a few hours
        # back so a match in the repeated hour is seen, then keep the first one after `last`
        earlier = (after - _DST_SPAN).astimezone(tz)
        start = wall - _DST_SPAN if earlier.utcoffset() != after.utcoffset() else wall
        times = croniter(self.expression, start, day_or=self.day_or)
        while True:
            candidate = _instant(times.get_next(datetime), tz)
            if candidate.timestamp() > after.timestamp():  # same-zone `>` ignores fold
                return candidate

    @property
    def key(self) -> str:
        return f"cron {self.expression}" + (f" {self.tz}" if self.tz else "")

    def __repr__(self) -> str:
        return f"<crontab: {self.expression}" + (f" {self.tz}>" if self.tz else ">")


def _field(value: Any) -> str:
    if isinstance(value, bool):
        raise ConfigError(f"crontab field {value!r} is not a number or cron text")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        text = value.replace(" ", "")
        return text or "*"
    if isinstance(value, Iterable):
        return ",".join(str(int(v)) for v in sorted(value))
    raise ConfigError(f"crontab field {value!r} is not a number, cron text or a set of numbers")


def _instant(wall: datetime, tz: tzinfo) -> datetime:
    """The instant of a naive wall-clock time: its first occurrence when it happens twice, the
    first valid time after the gap when it does not exist."""
    aware = wall.replace(tzinfo=tz, fold=0)
    if aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall:
        return aware
    probe = wall.replace(second=0, microsecond=0)  # in a gap: walk to its end, minute by minute
    for _ in range(24 * 60):
        probe += timedelta(minutes=1)
        aware = probe.replace(tzinfo=tz)
        if aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == probe:
            return aware
    raise ConfigError(f"{wall} does not exist in {tz}")  # pragma: no cover


def parse_every(text: str) -> schedule:
    """``'15m'``, ``'1h'``, ``'30s'``, ``'1d'``, ``'90'`` (seconds) as an interval schedule."""
    match = _EVERY.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"interval {text!r} is not like '30s', '15m', '1h' or '1d'")
    return schedule(float(match.group(1)) * _UNITS[match.group(2)])


def as_schedule(value: Any, tz: str | None = None) -> BaseSchedule:
    """A schedule from what a ``beat_schedule`` entry may hold: a schedule object, a cron
    string, seconds or a timedelta."""
    if isinstance(value, BaseSchedule):
        return value
    if isinstance(value, str):
        return crontab.from_string(value, tz=tz)
    if isinstance(value, timedelta | int | float) and not isinstance(value, bool):
        return schedule(value)
    if hasattr(value, "run_every"):  # a Celery-like interval object
        return schedule(value.run_every)
    raise ConfigError(f"{value!r} is not a schedule: use seconds, a timedelta, a cron string "
                      f"like '*/5 * * * *' or runner.schedules.crontab(...)")
