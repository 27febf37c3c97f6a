"""The example pipelines of ``pipelines/``, each run end to end with ``runner run`` (which
starts and stops its own worker), as the README shows."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.transports("sqlite", "redis")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "pipelines"


def run_example(pipelines, name: str, *args: str, cwd: Path | None = None) -> str:
    """``runner run pipelines/<name>.yaml ARGS``; the run id (it must succeed)."""
    result = pipelines.cli("run", EXAMPLES / f"{name}.yaml", *args, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    run = lines[0].split()[1]
    assert f"run {run}: success" in lines  # then the final steps' results
    return run


def test_daily_sales_totals_each_shop_and_alerts_on_a_big_day(pipelines):
    run = run_example(pipelines, "daily_sales", "-p", "date=2026-11-24",
                      "-p", "shops=[north, south, east]", "-p", "limit=100")
    sales = pipelines.result(run, "extract")
    assert len(sales) == 3 and all(isinstance(amount, int) for amount in sales)
    assert pipelines.result(run, "total") == sum(sales) > 100
    assert pipelines.result(run, "alert") == f"ALERT: sales of {sum(sales)} today"


def test_daily_sales_runs_once_per_date_and_reports_only_a_failure(pipelines):
    run = run_example(pipelines, "daily_sales", "-p", "date=2026-11-25")
    again = pipelines.cli("run", EXAMPLES / "daily_sales.yaml", "-p", "date=2026-11-25")
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines()[0].split()[1] == run  # its key: daily-sales:2026-11-25
    assert f"run {run} has key 'daily-sales:2026-11-25' (success); no other run started" \
        in again.stderr
    record = pipelines.wait(run)
    assert record.key == "daily-sales:2026-11-25"
    assert record.steps["on_failure"].state == "skipped"  # one_failed: nothing failed
    assert record.steps["on_failure"].reason == (
        "trigger rule one_failed: extract success, total success")


def test_daily_sales_skips_the_alert_on_a_quiet_day(pipelines):
    run = run_example(pipelines, "daily_sales", "-p", "limit=1000000")
    status = pipelines.cli("status", run).stdout
    assert "alert                skipped" in status


def test_csv_etl_summarizes_each_file_in_parallel_and_writes_the_merged_summary(pipelines,
                                                                                 tmp_path):
    out = tmp_path / "out" / "summary.json"
    run = run_example(pipelines, "csv_etl", "-p", f"out={out}", cwd=ROOT)  # default folder
    written = json.loads(out.read_text())
    assert written["summary"] == {"files": 3, "rows": 12, "total": 103.0}
    assert [f["file"] for f in written["per_file"]] == ["north.csv", "south.csv", "west.csv"]
    assert written["per_file"][0] == {"file": "north.csv", "rows": 4, "total": 38.5}
    status = pipelines.cli("status", run).stdout
    assert "summarize            success (3/3)" in status


def test_csv_etl_over_another_folder_and_column(pipelines, tmp_path):
    folder = tmp_path / "csv"
    folder.mkdir()
    for index in range(5):
        (folder / f"f{index}.csv").write_text(f"qty\n{index}\n{index}\n")
    out = tmp_path / "s.json"
    run = run_example(pipelines, "csv_etl", "-p", f"folder={folder}", "-p", "column=qty",
                      "-p", f"out={out}")
    assert pipelines.result(run, "merge") == {"files": 5, "rows": 10, "total": 20.0}


@pytest.mark.parametrize(("threshold", "paged"), [(0, True), (1000, False)])
def test_weekly_report_pages_on_call_only_at_the_error_threshold(pipelines, threshold, paged):
    run = run_example(pipelines, "weekly_report", "-p", f"error_threshold={threshold}",
                      "--logical-date", "2026-11-25T09:00:00")
    metrics = pipelines.result(run, "collect_metrics")
    assert metrics["week"] == "2026-W48"  # the default, from run.logical_date
    assert pipelines.result(run, "render_report").startswith("Week 2026-W48: ")
    status = pipelines.cli("status", run).stdout
    if paged:
        assert pipelines.result(run, "page_on_call") == (
            f"paged: {metrics['errors']} errors >= 0")
    else:
        assert "page_on_call         skipped" in status


def _scratch(tmp_path: Path) -> tuple[Path, list[Path], Path]:
    folder = tmp_path / "scratch"
    folder.mkdir()
    old = [folder / "old-1.log", folder / "old-2.log"]
    fresh = folder / "fresh.log"
    ten_days_ago = time.time() - 10 * 86400
    for path in [*old, fresh]:
        path.write_text("x")
    for path in old:
        os.utime(path, (ten_days_ago, ten_days_ago))
    return folder, old, fresh


def test_nightly_cleanup_is_a_dry_run_by_default(pipelines, tmp_path):
    folder, old, fresh = _scratch(tmp_path)
    run = run_example(pipelines, "nightly_cleanup", "-p", f"folder={folder}")
    assert pipelines.result(run, "find_expired") == [str(p) for p in old]
    assert pipelines.result(run, "delete_files") == 2
    assert all(p.exists() for p in [*old, fresh])


def test_nightly_cleanup_deletes_expired_files_when_asked(pipelines, tmp_path):
    folder, old, fresh = _scratch(tmp_path)
    run_example(pipelines, "nightly_cleanup", "-p", f"folder={folder}", "-p", "dry_run=false")
    assert not any(p.exists() for p in old)
    assert fresh.exists()


def test_nightly_cleanup_declares_its_cron_trigger():
    from runner.pipeline.validate import load_pipeline

    model = load_pipeline(EXAMPLES / "nightly_cleanup.yaml").model
    assert [(t.cron, t.timezone) for t in model.triggers] == [("30 2 * * *", "Europe/Oslo")]
    assert model.params["dry_run"].default is True
