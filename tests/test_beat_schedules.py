"""Schedules of runner beat: cron syntax through croniter, intervals, and the DST policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from runner.exceptions import ConfigError
from runner.schedules import as_schedule, crontab, parse_every, schedule

OSLO = ZoneInfo("Europe/Oslo")
NEW_YORK = ZoneInfo("America/New_York")


def local(times, tz):
    return [t.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z") for t in times]


def test_cron_lists_ranges_and_steps():
    start = datetime(2025, 1, 1, tzinfo=UTC)
    times = crontab(minute="0,30", hour="9-10").upcoming(start, 5)
    assert [t.strftime("%H:%M") for t in times] == ["09:00", "09:30", "10:00", "10:30", "09:00"]
    times = crontab(minute="*/20", hour="8-17/4").upcoming(start, 4)
    assert [t.strftime("%H:%M") for t in times] == ["08:00", "08:20", "08:40", "12:00"]


def test_cron_day_and_month_names():
    start = datetime(2025, 1, 30, 12, tzinfo=UTC)  # a Thursday
    times = crontab(minute=0, hour=7, day_of_week="mon-fri", month_of_year="jan,mar"
                    ).upcoming(start, 3)
    assert [t.strftime("%a %d %b") for t in times] == ["Fri 31 Jan", "Mon 03 Mar", "Tue 04 Mar"]
    sundays = crontab(minute=0, hour=0, day_of_week="sun").upcoming(start, 2)
    assert [t.strftime("%a %d") for t in sundays] == ["Sun 02", "Sun 09"]


def test_crontab_takes_ints_and_sets_like_celery():
    start = datetime(2025, 1, 1, tzinfo=UTC)
    times = crontab(minute={15, 45}, hour=6).upcoming(start, 3)
    assert [t.strftime("%d %H:%M") for t in times] == ["01 06:15", "01 06:45", "02 06:15"]


def test_crontab_day_fields_both_match_but_a_cron_string_means_either():
    start = datetime(2025, 6, 1, tzinfo=UTC)  # a Sunday
    both = crontab(minute=0, hour=0, day_of_month="13", day_of_week="fri").upcoming(start, 1)
    assert both[0].date().isoformat() == "2025-06-13"  # Friday the 13th
    either = crontab.from_string("0 0 13 * fri").upcoming(start, 2)
    assert [t.date().isoformat() for t in either] == ["2025-06-06", "2025-06-13"]


@pytest.mark.parametrize("bad", ["61 * * * *", "* * * * foo", "* * *", "0 25 * * *"])
def test_bad_cron_strings_are_config_errors(bad):
    with pytest.raises(ConfigError, match="cron"):
        as_schedule(bad)


def test_intervals_sit_on_a_grid_every_process_agrees_on():
    every = parse_every("15m")
    start = datetime(2025, 3, 30, 0, 7, tzinfo=UTC)
    assert [t.strftime("%H:%M") for t in every.upcoming(start, 3)] == ["00:15", "00:30", "00:45"]
    assert schedule(timedelta(seconds=90)).seconds == as_schedule(90).seconds == 90
    for text in ("0s", "fast", "-5m"):
        with pytest.raises(ConfigError):
            parse_every(text)


def test_oslo_spring_forward_daily_0230_fires_once_at_0300():
    daily = crontab(minute=30, hour=2)
    times = daily.upcoming(datetime(2025, 3, 29, 12, tzinfo=OSLO), 3, OSLO)
    assert local(times, OSLO) == ["2025-03-30 03:00 CEST", "2025-03-31 02:30 CEST",
                                  "2025-04-01 02:30 CEST"]


def test_oslo_fall_back_daily_0230_fires_once():
    daily = crontab(minute=30, hour=2)
    times = daily.upcoming(datetime(2025, 10, 25, 12, tzinfo=OSLO), 3, OSLO)
    assert local(times, OSLO) == ["2025-10-26 02:30 CEST", "2025-10-27 02:30 CET",
                                  "2025-10-28 02:30 CET"]


def test_oslo_fall_back_resumed_inside_the_repeated_hour_does_not_refire():
    daily = crontab(minute=30, hour=2)
    second_0210 = datetime(2025, 10, 26, 1, 10, tzinfo=UTC)  # 02:10 CET, the second time round
    assert local([daily.next_after(second_0210, OSLO)], OSLO) == ["2025-10-27 02:30 CET"]


def test_hourly_job_across_oslo_transitions():
    hourly = crontab(minute=30)
    spring = hourly.upcoming(datetime(2025, 3, 30, 1, tzinfo=OSLO), 3, OSLO)
    assert local(spring, OSLO) == ["2025-03-30 01:30 CET", "2025-03-30 03:00 CEST",
                                   "2025-03-30 03:30 CEST"]
    fall = hourly.upcoming(datetime(2025, 10, 26, 1, tzinfo=OSLO), 3, OSLO)
    assert local(fall, OSLO) == ["2025-10-26 01:30 CEST", "2025-10-26 02:30 CEST",
                                 "2025-10-26 03:30 CET"]


def test_new_york_spring_forward_and_fall_back():
    daily = crontab(minute=30, hour=2)
    spring = daily.upcoming(datetime(2025, 3, 8, 12, tzinfo=NEW_YORK), 2, NEW_YORK)
    assert local(spring, NEW_YORK) == ["2025-03-09 03:00 EDT", "2025-03-10 02:30 EDT"]
    one_thirty = crontab(minute=30, hour=1)  # 01:30 happens twice on 2 November 2025
    fall = one_thirty.upcoming(datetime(2025, 11, 1, 12, tzinfo=NEW_YORK), 2, NEW_YORK)
    assert local(fall, NEW_YORK) == ["2025-11-02 01:30 EDT", "2025-11-03 01:30 EST"]


def test_intervals_ignore_dst():
    times = parse_every("1h").upcoming(datetime(2025, 3, 30, 0, 30, tzinfo=UTC), 3, OSLO)
    assert [t - s for s, t in zip(times, times[1:], strict=False)] == [timedelta(hours=1)] * 2
    assert local(times, OSLO) == ["2025-03-30 03:00 CEST", "2025-03-30 04:00 CEST",
                                  "2025-03-30 05:00 CEST"]


def test_crontab_with_its_own_timezone_wins_over_the_app_zone():
    daily = crontab(minute=0, hour=9, tz="America/New_York")
    (first,) = daily.upcoming(datetime(2025, 1, 1, tzinfo=UTC), 1, OSLO)
    assert first.astimezone(UTC).hour == 14
    with pytest.raises(ConfigError, match="unknown timezone"):
        crontab(tz="Mars/Olympus")
