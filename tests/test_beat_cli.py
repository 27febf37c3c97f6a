"""``runner beat`` as users run it: start-up validation, --list, --history, and failover between
two real beat processes sharing one backend."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import ROOT

APP = """
import os
from runner import Celery
from runner.schedules import crontab

app = Celery("beatapp", broker=os.environ["BEAT_URL"], backend=os.environ["BEAT_URL"])
app.conf.timezone = "Europe/Oslo"
app.conf.beat_lease_seconds = float(os.environ.get("BEAT_LEASE", "10"))


@app.task
def ping(n=0):
    return n


if not os.environ.get("BEAT_SCHEDULE_FROM_FILE"):
  app.conf.beat_schedule = {
    "every-second": {"task": "beatapp.ping", "schedule": 1.0, "args": (1,)},
    "weekdays": {"task": "beatapp.ping", "schedule": crontab(minute=30, hour=2,
                                                             day_of_week="mon-fri")},
}
"""


class Beats:
    """Writes the app module and runs ``runner beat`` against ``url`` from ``folder``."""

    def __init__(self, folder: Path, url: str):
        self.dir, self.url = folder, url
        (folder / "beatapp.py").write_text(APP)
        self.env = {**os.environ, "BEAT_URL": url,
                    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.started: list[tuple[subprocess.Popen, Path]] = []

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "runner", "beat", "-A", "beatapp", *args],
                              cwd=self.dir, env={**self.env, **env}, capture_output=True,
                              text=True, timeout=60)

    def start(self, *args: str, **env: str) -> tuple[subprocess.Popen, Path]:
        log = self.dir / f"beat-{len(self.started)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "runner", "beat", "-A", "beatapp", "-l", "info", *args],
            cwd=self.dir, env={**self.env, **env}, stdout=open(log, "wb"),
            stderr=subprocess.STDOUT, start_new_session=True)
        self.started.append((proc, log))
        return proc, log

    def stop_all(self) -> None:
        for proc, _log in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def wait_for(log: Path, text: str, timeout: float = 15.0) -> float:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in {log.name} after {timeout}s:\n"
                                 f"{log.read_text(errors='replace')}")
        time.sleep(0.02)
    return time.monotonic()


@pytest.fixture(params=["sqlite", "redis"])
def backend_url(request, tmp_path) -> str:
    if request.param == "redis":
        return request.getfixturevalue("redis_server").fresh()
    return f"sqlite:///{tmp_path}/beat.db"


@pytest.fixture
def beats(tmp_path, backend_url):
    runner = Beats(tmp_path, backend_url)
    yield runner
    runner.stop_all()


def history(url: str) -> list:
    from runner import Celery
    from runner.beat.state import history as read_history

    app = Celery("reader", broker=url, backend=url, set_as_current=False)
    try:
        return read_history(app.backend), app.broker.qsize("celery")
    finally:
        app.close()


# -- start-up validation ---------------------------------------------------------------------


@pytest.mark.parametrize("config, expected", [
    ("beat_schedule:\n  nightly: {task: beatapp.ping, schedule: '61 * * * *'}\n",
     ["nightly", "61 * * * *"]),
    ("beat_schedule:\n  nightly: {task: beatapp.nope, schedule: 60}\n",
     ["'nightly'", "unknown task 'beatapp.nope'", "beatapp.ping"]),
])
def test_bad_beat_schedule_is_one_error_naming_the_entry(beats, config, expected):
    (beats.dir / "beat.yaml").write_text(config)
    result = beats.cli("--config", "beat.yaml", "--list", BEAT_SCHEDULE_FROM_FILE="1")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in result.stderr


@pytest.mark.parametrize("pipeline, expected", [
    ("triggers:\n  - {cron: '0 3 * * *', timezone: Mars/Olympus}\n",
     ["flow.yaml:5", "unknown timezone 'Mars/Olympus'"]),
    ("triggers:\n  - {cron: '0 3 * * * *'}\n", ["flow.yaml:5", "5 fields"]),
    ("triggers:\n  - {every: soon}\n", ["flow.yaml:5", "'soon'"]),
    ("triggers:\n  - {cron: '0 3 * * *', params: {nope: 1}}\n",
     ["flow.yaml:5", "unknown param 'nope'"]),
    ("triggers:\n  - {cron: '0 3 * * *', when: 3}\n", ["flow.yaml:5", "when"]),
])
def test_bad_pipeline_trigger_is_an_error_naming_it(beats, pipeline, expected):
    folder = beats.dir / "flows"
    folder.mkdir()
    (folder / "flow.yaml").write_text(
        "name: flow\nsteps:\n  one: {task: beatapp.ping}\n" + pipeline)
    result = beats.cli("--pipelines", "flows", "--list")
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr


def test_missing_pipelines_folder_is_an_error(beats):
    result = beats.cli("--pipelines", "no-such-dir")
    assert result.returncode != 0
    assert "no-such-dir: no such directory" in result.stderr
    assert "Traceback" not in result.stderr


# -- --list and --history --------------------------------------------------------------------


def test_list_shows_next_three_fires_in_the_entry_zone(beats):
    folder = beats.dir / "flows"
    folder.mkdir()
    (folder / "flow.yaml").write_text(
        "name: flow\nsteps:\n  one: {task: beatapp.ping}\n"
        "triggers:\n  - {cron: '0 3 * * *', timezone: America/New_York}\n")
    result = beats.cli("--pipelines", "flows", "--list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("every-second: beatapp.ping (every 1s, Europe/Oslo")
    weekdays = lines[lines.index(next(x for x in lines if x.startswith("weekdays:"))) + 1:][:3]
    assert all("T02:30:00+0" in line for line in weekdays)
    flow = lines[lines.index(next(x for x in lines if x.startswith("flow:"))) + 1:][:3]
    assert len(flow) == 3 and all("T03:00:00-0" in line for line in flow)


def test_history_lists_recorded_fires(beats):
    proc, log = beats.start()
    wait_for(log, "fired every-second", timeout=10)
    wait_for(log, "fired every-second", timeout=10)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert "released the lease" in log.read_text()
    out = beats.cli("--history").stdout.splitlines()
    assert out[0].split() == ["ENTRY", "SCHEDULED", "SENT", "ID"]
    assert out[1].startswith("every-second") and " task " in out[1]
    assert "+01:00" in out[1] or "+02:00" in out[1]  # in the app's zone
    assert beats.cli("--history", "weekdays").stdout.strip() == "no recorded fires of 'weekdays'"


# -- failover --------------------------------------------------------------------------------


def test_standby_takes_over_after_sigkill_without_losing_or_doubling_fires(beats, backend_url):
    lease = 2.0
    leader, leader_log = beats.start(BEAT_LEASE=str(lease))
    wait_for(leader_log, "leading")
    standby, standby_log = beats.start(BEAT_LEASE=str(lease))
    wait_for(standby_log, "standing by")
    wait_for(leader_log, "fired every-second")
    time.sleep(2.5)
    os.killpg(leader.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    leader.wait(10)
    took_over = wait_for(standby_log, ": leading", timeout=lease + 5)
    assert took_over - killed_at <= lease + 0.5, "standby took longer than one lease period"
    time.sleep(2.5)
    standby.send_signal(signal.SIGTERM)
    assert standby.wait(10) == 0
    records, queued = history(backend_url)
    times = [r.scheduled for r in records if r.entry == "every-second"]
    doubled = [t for t, n in Counter(times).items() if n > 1]
    assert not doubled
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps == [1.0] * len(gaps), f"lost fires: {gaps}"
    assert {r.sent_by.split(":")[1] for r in records} == {str(leader.pid), str(standby.pid)}
    assert len(times) >= 6
    assert queued == len(records)  # one message per recorded fire
