"""`runner backfill`: one run per trigger fire in a range, keyed as beat keys them (never a
second run of a date beat or an earlier backfill made), within max_active_runs, with progress;
and its bad input. Real workers, SQLite and Redis."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from runner.pipeline.runs import list_runs

pytestmark = pytest.mark.transports("sqlite", "redis")

NIGHTLY = """\
name: nightly
app: pipeline_tasks
max_active_runs: 1
steps:
  day: {task: pipeline_tasks.echo, args: ["{{ run.ds }}"], kwargs: {label: "{{ run.ds }}"}}
triggers:
  - cron: "0 3 * * *"
    timezone: UTC
"""


def test_backfill_makes_one_run_per_fire_and_never_doubles_one(pipelines):
    from runner.beat.entries import build_entries

    folder = pipelines.dir / "flows"
    folder.mkdir()
    path = folder / "nightly.yaml"
    path.write_text(NIGHTLY.replace("max_active_runs: 1\n", ""))
    (entry,) = build_entries(pipelines.app, str(folder))  # beat fires 2026-11-02 itself
    fired = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)
    beat_run = entry.fire(pipelines.app, fired, entry.fire_id(fired))
    pipelines.worker("-c", "2")
    done = pipelines.cli("backfill", path, "--from", "2026-11-01", "--to", "2026-11-03",
                         "--wait", "--timeout", "40")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == ("[1/3] 2026-11-01T03:00:00+00:00  run 20261101T030000-nightly  "
                        "started")
    assert lines[1] == (f"[2/3] 2026-11-02T03:00:00+00:00  run {beat_run}  exists (running)"
                        ) or lines[1].startswith(f"[2/3] 2026-11-02T03:00:00+00:00  run "
                                                 f"{beat_run}  exists (")
    assert lines[2].startswith("[3/3] 2026-11-03T03:00:00+00:00  run 20261103T030000-nightly  ")
    assert lines[-1] == "backfill: 3 of 3 run(s) succeeded"
    assert sorted(pipelines.marks()) == ["2026-11-01", "2026-11-02", "2026-11-03"]
    again = pipelines.cli("backfill", path, "--from", "2026-11-03", "--to", "2026-11-04",
                          "--wait", "--timeout", "40")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "run 20261103T030000-nightly  exists (success)" in again.stdout
    assert "run 20261104T030000-nightly  started" in again.stdout
    assert sorted(pipelines.marks()) == ["2026-11-01", "2026-11-02", "2026-11-03",
                                         "2026-11-04"]
    runs = list_runs(pipelines.app.backend)
    assert sorted(r.key for r in runs) == [f"nightly:2026-11-0{d}T03:00:00+00:00"
                                           for d in (1, 2, 3, 4)]


def test_backfill_respects_max_active_runs(pipelines):
    path = pipelines.write(NIGHTLY.replace("pipeline_tasks.echo, args: [\"{{ run.ds }}\"]",
                                           "pipeline_tasks.sleep, args: [0.3, \"{{ run.ds }}\"]"
                                           ).replace(', kwargs: {label: "{{ run.ds }}"}', ""))
    started = pipelines.cli("backfill", path, "--from", "2026-10-01", "--to", "2026-10-04")
    assert started.returncode == 0, started.stderr
    assert [line.split()[-1] for line in started.stdout.splitlines()] == [
        "started", "(max_active_runs)", "(max_active_runs)", "(max_active_runs)"]
    pipelines.worker("-c", "4")
    for run in list_runs(pipelines.app.backend):
        assert pipelines.wait(run.id, timeout=60).state == "success"
    starts = [m for m in pipelines.marks() if m.startswith(("start:", "end:"))]
    assert starts == [f"{kind}:2026-10-0{d}" for d in (1, 2, 3, 4) for kind in ("start", "end")]


def test_backfill_refuses_a_range_without_fires_and_a_pipeline_without_triggers(pipelines):
    yearly = pipelines.write(NIGHTLY.replace('"0 3 * * *"', '"0 3 1 1 *"'), "yearly.yaml")
    none = pipelines.cli("backfill", yearly, "--from", "2026-03-01", "--to", "2026-03-31")
    assert none.returncode == 2
    assert ("no trigger of 'nightly' fires from 2026-03-01T00:00:00+00:00 to "
            "2026-03-31T23:59:59.999999+00:00") in none.stderr
    assert f"{yearly}:7:5: cron 0 3 1 1 * (UTC)" in none.stderr
    backwards = pipelines.cli("backfill", yearly, "--from", "2026-03-02", "--to", "2026-03-01")
    assert backwards.returncode == 2 and "is before --from" in backwards.stderr
    plain = pipelines.write("name: plain\napp: pipeline_tasks\nsteps:\n"
                            "  a: {task: pipeline_tasks.echo}\n", "plain.yaml")
    untriggered = pipelines.cli("backfill", plain, "--from", "2026-03-01", "--to", "2026-03-02")
    assert untriggered.returncode == 2
    assert f"{plain}: pipeline 'plain' has no triggers" in untriggered.stderr
    assert list_runs(pipelines.app.backend) == []


def test_runs_table_stays_aligned_with_long_run_ids(pipelines):
    path = pipelines.write(NIGHTLY.replace("name: nightly", "name: a-rather-long-pipeline-name"))
    assert pipelines.cli("backfill", path, "--from", "2026-11-01", "--to", "2026-11-01"
                         ).returncode == 0
    pipelines.submit(pipelines.write("name: short\napp: pipeline_tasks\nsteps:\n"
                                     "  a: {task: pipeline_tasks.echo}\n", "short.yaml"))
    lines = pipelines.cli("runs").stdout.splitlines()
    assert len(lines) == 3
    columns = {line.index(state) for line, state in zip(lines, ["STATE", "running", "running"],
                                                       strict=True)}
    assert len(columns) == 1, lines  # STATE starts at the same column on every line
    assert "20261101T030000-a-rather-long-pipeline-name" in lines[2]
