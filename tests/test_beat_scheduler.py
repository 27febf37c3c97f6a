"""The beat loop with an injected clock: fires, persistence, catch-up, leases, pipelines."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from runner.beat.entries import build_entries
from runner.beat.scheduler import Beat
from runner.beat.state import history, read_state
from runner.pipeline.runs import load_run

T0 = datetime(2025, 3, 29, 23, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


def make_beat(app, clock, owner="one", pipelines=None, **kwargs):
    kwargs.setdefault("lease_seconds", 10)
    return Beat(app, build_entries(app, pipelines), owner=owner, clock=clock, **kwargs)


def fired(app, entry=None):
    return [datetime.fromtimestamp(r.scheduled, UTC).strftime("%H:%M:%S")
            for r in history(app.backend, entry)]


def run_for(beat, clock, seconds, step=1.0):
    for _ in range(int(seconds / step)):
        clock.advance(step)
        beat.tick()


def test_interval_entry_fires_each_scheduled_time_once(app, clock):
    app.conf.beat_schedule = {"ten": {"task": "tasks.add", "schedule": 10, "args": (1, 2)}}
    beat = make_beat(app, clock)
    beat.tick()  # first sight: starts the timeline, fires nothing
    run_for(beat, clock, 35, step=0.5)
    assert fired(app) == ["23:00:10", "23:00:20", "23:00:30"]
    assert app.broker.qsize("celery") == 3
    record = history(app.backend)[0]
    assert record.kind == "task" and record.sent_by == "one"


def test_restart_neither_fires_again_nor_skips(app, clock):
    app.conf.beat_schedule = {"ten": {"task": "tasks.add", "schedule": 10, "args": (1, 2)}}
    first = make_beat(app, clock)
    first.tick()
    run_for(first, clock, 15)
    first.release()
    app.close()  # a new process: state only from the SQLite file
    clock.advance(3)  # down over 23:00:20, within the grace: it fires late, once
    second = make_beat(app, clock, owner="two")
    second.tick()
    run_for(second, clock, 12)
    assert fired(app) == ["23:00:10", "23:00:20", "23:00:30"]
    assert [r.sent_by for r in history(app.backend)] == ["one", "two", "two"]


@pytest.mark.parametrize("policy, expected", [
    ("skip", ["23:01:00", "23:02:00", "23:05:00"]),
    ("latest", ["23:01:00", "23:02:00", "23:04:00", "23:05:00"]),
    ("all", ["23:01:00", "23:02:00", "23:03:00", "23:04:00", "23:05:00"]),
])
def test_catchup_policy_after_beat_was_down(app, clock, policy, expected):
    app.conf.beat_schedule = {"minutely": {"task": "tasks.add", "schedule": "* * * * *",
                                           "args": (1, 1), "catchup": policy}}
    beat = make_beat(app, clock)
    beat.tick()
    run_for(beat, clock, 150, step=5)  # fires 23:01 and 23:02 on time
    clock.advance(140)  # down over 23:03 and 23:04: both missed (over the 20 s grace)
    run_for(beat, clock, 40, step=5)  # back at 23:04:50, then 23:05 on time
    assert fired(app) == expected


def test_catchup_all_is_bounded(app, clock):
    app.conf.beat_schedule = {"minutely": {"task": "tasks.add", "schedule": "* * * * *",
                                           "args": (1, 1), "catchup": "all",
                                           "catchup_limit": 2}}
    beat = make_beat(app, clock)
    beat.tick()
    clock.advance(10 * 60 + 30)
    beat.tick()
    assert fired(app) == ["23:09:00", "23:10:00"]  # the most recent two, oldest first


def test_two_beats_one_leader_and_takeover_after_the_lease(app, clock):
    app.conf.beat_schedule = {"every": {"task": "tasks.add", "schedule": 1, "args": (1, 1)}}
    leader, standby = make_beat(app, clock, "leader"), make_beat(app, clock, "standby")
    leader.tick()
    standby.tick()
    assert leader.leading and not standby.leading
    for _ in range(5):
        clock.advance(1)
        leader.tick()
        standby.tick()
    # the leader dies (no release); the standby waits out the lease, then leads
    for _ in range(9):
        clock.advance(1)
        standby.tick()
        assert not standby.leading
    clock.advance(1)
    standby.tick()
    assert standby.leading and read_state(app.backend).lease.owner == "standby"
    times = [r.scheduled for r in history(app.backend)]
    assert times == sorted(set(times))  # none doubled
    assert [b - a for a, b in zip(times, times[1:], strict=False)] == [1.0] * (len(times) - 1)
    assert len(times) == 15


def test_a_fire_claimed_by_a_dead_leader_is_sent_by_the_next(app, clock, monkeypatch):
    app.conf.beat_schedule = {"ten": {"task": "tasks.add", "schedule": 10, "args": (1, 2)}}
    dying = make_beat(app, clock, "dying")
    dying.tick()
    clock.advance(10)
    monkeypatch.setattr(Beat, "_send_pending", lambda self, pending, now: None)  # killed here
    dying.tick()
    monkeypatch.undo()
    assert [p.entry for p in read_state(app.backend).pending] == ["ten"]
    clock.advance(10)  # the lease ran out
    heir = make_beat(app, clock, "heir")
    heir.tick()
    assert fired(app) == ["23:00:10", "23:00:20"]
    assert read_state(app.backend).pending == []
    assert app.broker.qsize("celery") == 2


def test_pipeline_trigger_run_has_the_scheduled_logical_date(pipelines, clock):
    folder = pipelines.dir / "flows"
    folder.mkdir()
    (folder / "nightly.yaml").write_text(
        "name: nightly\nparams:\n  label: {default: x}\nsteps:\n"
        "  one: {task: pipeline_tasks.echo, args: ['{{ params.label }}']}\n"
        "triggers:\n  - cron: '30 2 * * *'\n    timezone: Europe/Oslo\n"
        "    params: {label: nightly}\n")
    clock.now = datetime(2025, 3, 30, 0, 50, tzinfo=UTC).timestamp()  # 01:50 CET
    beat = make_beat(pipelines.app, clock, pipelines=str(folder))
    beat.tick()
    run_for(beat, clock, 20 * 60, step=30)  # past the spring-forward gap
    (record,) = history(pipelines.app.backend, "nightly")
    run = load_run(pipelines.app.backend, record.fire_id)
    oslo = ZoneInfo("Europe/Oslo")
    assert run.logical_date == datetime(2025, 3, 30, 3, 0, tzinfo=oslo)
    assert run.logical_date == datetime(2025, 3, 30, 1, 0, tzinfo=UTC)  # the same instant
    assert run.id.startswith("20250330T010000")  # run ids read in UTC, whoever starts them
    assert run.key == "nightly:2025-03-30T01:00:00+00:00"  # one run per logical date
    assert run.params == {"label": "nightly"} and record.kind == "pipeline"


def test_history_keeps_the_newest_fires_of_each_entry(app, clock, monkeypatch):
    """The history does not grow forever: past ``beat_history_keep`` fires per entry the
    oldest are deleted (every PRUNE_EVERY fires), and what is kept is the newest."""
    import runner.beat.scheduler as scheduler

    monkeypatch.setattr(scheduler, "PRUNE_EVERY", 4)
    app.conf.beat_history_keep = 3
    app.conf.beat_schedule = {"ten": {"task": "tasks.add", "schedule": 10, "args": (1, 2)},
                              "twenty": {"task": "tasks.add", "schedule": 20, "args": (1, 2)}}
    beat = make_beat(app, clock)
    beat.tick()
    run_for(beat, clock, 125, step=0.5)
    assert app.broker.qsize("celery") == 12 + 6  # every fire was sent
    ten, twenty = fired(app, "ten"), fired(app, "twenty")
    assert len(ten) <= 3 + 4 and ten[-1] == "23:02:00"  # (at most a prune interval more)
    assert len(twenty) <= 3 + 4 and twenty[-1] == "23:02:00"
    run_for(beat, clock, 0.5, step=0.5)
    beat._fires_since_prune = scheduler.PRUNE_EVERY  # prune at the next fire
    run_for(beat, clock, 10, step=0.5)
    assert fired(app, "ten") == ["23:01:50", "23:02:00", "23:02:10"]
    assert fired(app, "twenty") == ["23:01:20", "23:01:40", "23:02:00"]
