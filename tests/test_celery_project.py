"""examples/celery_project, a Celery project whose only change is the import, run end to end
with a real worker and beat: shared tasks found by autodiscovery, a Task base class, retries,
signals, a progress-reporting task, settings under the CELERY_ namespace, a beat schedule."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.transports("sqlite", "redis")

PROJECT = ROOT / "examples" / "celery_project"


@pytest.fixture
def project(tmp_path, db_url, monkeypatch):
    """The project copied into the test's folder, imported fresh, on this test's broker."""
    shutil.copytree(PROJECT / "proj", tmp_path / "proj")
    audit = tmp_path / "audit.jsonl"
    env = {"CELERY_BROKER_URL": db_url, "PROJ_AUDIT_LOG": str(audit),
           "PROJ_HEARTBEAT_SECONDS": "1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]
    import proj

    from runner import _state

    _state.set_current_app(proj.celery_app)
    yield proj, env, audit
    proj.celery_app.close()
    for name in [m for m in sys.modules if m == "proj" or m.startswith("proj.")]:
        del sys.modules[name]


def audit_lines(path, count, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count:
            return [json.loads(line) for line in lines]
        time.sleep(0.05)
    raise AssertionError(f"{path}: fewer than {count} lines")


def test_the_project_runs_unchanged_but_for_the_import(project, start_worker):
    proj, env, audit = project
    from proj.orders.tasks import charge, place_order
    from proj.reports.tasks import build_report

    worker = start_worker("-c", "2", app="proj", env=env)
    assert place_order.delay("book", 2).get(timeout=15)["item"] == "book"
    with pytest.raises(ValueError, match="cannot order 0"):
        place_order.delay("book", 0).get(timeout=15)
    assert charge.delay(10).get(timeout=15) == {"charged": 10, "attempts": 3}

    report = build_report.delay(6, 0.1)
    seen = set()
    while not report.ready():
        if report.state == "PROGRESS":
            seen.add(report.info["done"])
        time.sleep(0.02)
    assert report.get(timeout=5) == {"pages": 6} and seen and max(seen) <= 6

    events = audit_lines(audit, 2)
    assert {"event": "order placed", "task": "proj.orders.tasks.place_order",
            "result": {"item": "book", "quantity": 2, "order_no": 1}} in events
    failure = next(e for e in events if e["event"] == "failure")
    assert failure["task"] == "proj.orders.tasks.place_order" and "cannot order" in failure[
        "error"]
    assert proj.celery_app.tasks["proj.celery.debug_task"].delay().get() is None  # ignored
    assert "proj.reports.tasks.build_report" in worker.log()  # discovered, in the banner


def test_the_beat_schedule_fires(project, start_worker, worker_env, tmp_path):
    proj, env, _ = project
    worker = start_worker("-c", "1", app="proj", env=env)
    beat = subprocess.Popen([sys.executable, "-m", "runner", "beat", "-A", "proj"],
                            cwd=tmp_path, env={**worker_env, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while worker.log().count("proj.orders.tasks.heartbeat[") < 4:  # received, succeeded
            assert time.monotonic() < deadline, worker.log()[-3000:]
            time.sleep(0.1)
    finally:
        beat.terminate()
        beat.wait(10)
