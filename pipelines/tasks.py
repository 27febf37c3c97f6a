"""Tasks used by the example pipelines in this folder.

Start a worker for them from the repository root: ``runner worker -A pipelines.tasks``.
"""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import date
from pathlib import Path

from runner import Celery

app = Celery("pipelines")


# -- daily-sales ---------------------------------------------------------------------------

@app.task
def load_sales(shop: str, day: str | date) -> int:
    """Sales of one shop on one day (made up, but the same for the same inputs)."""
    digest = hashlib.sha256(f"{shop}:{day}".encode()).digest()
    return 100 + digest[0] * 4


@app.task
def total(amounts: list[int]) -> int:
    return sum(amounts)


@app.task
def alert(amount: int) -> str:
    return f"ALERT: sales of {amount} today"


@app.task
def report_failure(states: dict[str, str]) -> str:
    failed = sorted(step for step, state in states.items() if state == "failed")
    return f"daily sales failed at {', '.join(failed)}"


# -- csv-etl -------------------------------------------------------------------------------

@app.task
def list_csv_files(folder: str) -> list[str]:
    return sorted(str(p) for p in Path(folder).glob("*.csv"))


@app.task
def summarize_csv(path: str, column: str) -> dict:
    """Row count and the sum of one numeric column of a CSV file."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {"file": Path(path).name, "rows": len(rows),
            "total": round(sum(float(r[column]) for r in rows), 2)}


@app.task
def merge_summaries(summaries: list[dict], out: str) -> dict:
    merged = {"files": len(summaries), "rows": sum(s["rows"] for s in summaries),
              "total": round(sum(s["total"] for s in summaries), 2)}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps({"summary": merged, "per_file": summaries}, indent=2))
    return merged


# -- weekly-report -------------------------------------------------------------------------

@app.task
def collect_metrics(week: str) -> dict:
    digest = hashlib.sha256(week.encode()).digest()
    return {"week": week, "signups": digest[1], "errors": digest[2] % 20}


@app.task
def render_report(metrics: dict) -> str:
    return (f"Week {metrics['week']}: {metrics['signups']} signups, "
            f"{metrics['errors']} errors")


@app.task
def page_on_call(metrics: dict, threshold: int) -> str:
    return f"paged: {metrics['errors']} errors >= {threshold}"


# -- nightly-cleanup -----------------------------------------------------------------------

@app.task
def find_expired(folder: str, days: int) -> list[str]:
    import time

    cutoff = time.time() - days * 86400
    return sorted(str(p) for p in Path(folder).glob("*") if p.is_file()
                  and p.stat().st_mtime < cutoff)


@app.task
def delete_files(paths: list[str], dry_run: bool = True) -> int:
    if not dry_run:
        for path in paths:
            Path(path).unlink(missing_ok=True)
    return len(paths)
