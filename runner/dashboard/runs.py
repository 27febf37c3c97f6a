"""Pipeline runs, pipelines and triggers as plain dicts, read from the result backend (the run
records the engine keeps; the beat state and history), never from events: a run page is right
even when the dashboard started after the run."""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from runner.dashboard.context import Context
from runner.dashboard.errors import HTTPProblem, not_found
from runner.dashboard.filters import RunFilter
from runner.exceptions import RunnerError
from runner.pipeline.runs import RUN_DONE, RunRecord, items_key, load_run

#: every state a step can be in, in the order the runs list shows their counts
STEP_STATES = ("success", "failed", "skipped", "cancelled", "running", "queued", "pending")
SHORT = 300  # characters of a step's result shown on the run page


def plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def short(value: Any) -> str:
    text = json.dumps(plain(value), ensure_ascii=False)
    return text if len(text) <= SHORT else text[:SHORT - 3] + "..."


def run_summary(record: RunRecord) -> dict[str, Any]:
    return {"id": record.id, "pipeline": record.pipeline, "state": record.state,
            "created_at": record.created_at, "finished_at": record.finished_at,
            "logical_date": record.logical_date.isoformat(), "attempt": record.attempt,
            "steps": {s: sum(1 for r in record.steps.values() if r.state == s)
                      for s in STEP_STATES}}


def run_records(ctx: Context) -> list[RunRecord]:
    """Every run record in the result backend, each decoded once while it does not change
    (decoding was 90 % of reading 5,000 runs: 0.16 of 0.18 s); the dashboard only reads them."""
    known: dict[str, tuple[bytes, RunRecord]] = ctx.extra.get("run_records", {})
    fresh = {}
    for key, raw in ctx.app.backend.scan_data("run:"):
        hit = known.get(key)
        fresh[key] = hit if hit is not None and hit[0] == raw else (raw, RunRecord.decode(raw))
    ctx.extra["run_records"] = fresh  # (runs gone from the backend are dropped)
    return [record for _raw, record in fresh.values()]


def runs(ctx: Context, given: RunFilter) -> dict[str, Any]:
    records = [r for r in run_records(ctx)
               if (given.pipeline is None or r.pipeline == given.pipeline)
               and (given.state is None or r.state == given.state)]
    records.sort(key=lambda r: r.created_at, reverse=True)
    page = records[given.offset:given.offset + given.limit]
    return {"total": len(records), "offset": given.offset, "limit": given.limit,
            "runs": [run_summary(r) for r in page],
            "pipelines": sorted({r.pipeline for r in records})}


def load(ctx: Context, run_id: str) -> RunRecord:
    try:
        return load_run(ctx.app.backend, run_id)
    except RunnerError:
        raise not_found(f"no run {run_id!r} in the result backend") from None


def run(ctx: Context, run_id: str) -> dict[str, Any]:
    """The run, each step with its state, done/total of a map, result or error, and the
    edges of its DAG (``needs``)."""
    from runner.pipeline.engine import Driver

    record = load(ctx, run_id)
    driver = Driver(ctx.app, run_id)
    steps = {}
    for name, step in record.steps.items():
        done = None
        if step.items is not None:
            done = (step.items if step.state in ("success", "failed") else
                    ctx.app.backend.set_size(items_key(record.id, name, step.attempt)))
        result = None
        if step.state == "success":
            result = "***" if ctx.options.hide_args else short(driver.step_result(record, name))
        spec = driver.pipeline.steps[name]
        steps[name] = {"state": step.state, "items": step.items, "done": done,
                       "needs": list(spec.needs), "task": spec.task, "pipeline": spec.pipeline,
                       "started_at": step.started_at, "ended_at": step.ended_at,
                       "retries": step.retries, "error": step.error, "reason": step.reason,
                       "attempt": step.attempt, "queue": step.queue, "child": step.child,
                       "result": result}
    data = run_summary(record)
    data.update(params=plain(record.params), key=record.key, file=record.file,
                steps=steps, done=record.state in RUN_DONE, parent=record.parent,
                reused_from=record.reused_from)
    return data


# -- pipeline files (submit forms) ------------------------------------------------------------


def pipeline_files(ctx: Context) -> dict[str, Path]:
    """name -> file of the pipelines in ``--pipelines`` (those that load)."""
    from runner.pipeline.validate import load_pipeline

    folder = ctx.options.pipelines
    if not folder or not Path(folder).is_dir():
        return {}
    cached = ctx.extra.setdefault("pipelines", {})
    found = {}
    for path in sorted([*Path(folder).glob("*.yaml"), *Path(folder).glob("*.yml")]):
        stamp = (path, path.stat().st_mtime)
        if stamp not in cached:
            try:
                cached[stamp] = load_pipeline(path)
            except RunnerError:
                cached[stamp] = None
        if cached[stamp] is not None:
            found[cached[stamp].name] = path
    return found


def pipelines(ctx: Context) -> list[dict[str, Any]]:
    from runner.pipeline.validate import load_pipeline

    rows = []
    for name, path in pipeline_files(ctx).items():
        model = load_pipeline(path).model
        rows.append({"name": name, "file": str(path), "description": model.description,
                     "params": {p: {"type": spec.type, "required": spec.required,
                                    "secret": spec.secret, "description": spec.description,
                                    "default": None if spec.secret else plain(spec.default)}
                                for p, spec in model.params.items()}})
    return rows


def pipeline(ctx: Context, name: str) -> dict[str, Any]:
    for row in pipelines(ctx):
        if row["name"] == name:
            return row
    raise not_found(f"no pipeline {name!r} in --pipelines "
                    f"{ctx.options.pipelines or '(not given)'}")


# -- triggers ---------------------------------------------------------------------------------


def triggers(ctx: Context, upcoming: int = 3, last: int = 3) -> dict[str, Any]:
    """Every beat entry and pipeline trigger: next fires in its zone, last fires, and who
    holds the leader lease."""
    from runner.beat.entries import build_entries
    from runner.beat.state import history, read_state

    backend = ctx.app.backend
    try:
        entries = build_entries(ctx.app, ctx.options.pipelines)
        error = None
    except RunnerError as exc:
        entries, error = [], str(exc)
    now = time.time()
    fired: dict[str, list] = {}
    for record in history(backend):
        fired.setdefault(record.entry, []).append(record)
    rows = []
    for entry in entries:
        after = datetime.fromtimestamp(now, entry.tz)
        rows.append({
            "name": entry.name, "kind": entry.kind, "schedule": entry.schedule.key,
            "timezone": str(entry.tz),
            "target": entry.pipeline.name if entry.pipeline is not None else entry.task,
            "next": [t.isoformat() for t in entry.schedule.upcoming(after, upcoming,
                                                                     entry.tz)],
            "last": [{"scheduled": datetime.fromtimestamp(r.scheduled, entry.tz).isoformat(),
                      "sent_at": r.sent_at, "id": r.fire_id, "error": r.error}
                     for r in fired.get(entry.name, [])[-last:]][::-1]})
    state = read_state(backend)
    lease = state.lease
    leader = ({"owner": lease.owner, "expires": lease.expires,
               "expires_iso": datetime.fromtimestamp(lease.expires, UTC).isoformat()}
              if lease.owner and lease.expires > now else None)
    return {"entries": rows, "leader": leader, "error": error}


def need_pipeline_folder(ctx: Context) -> None:
    if not ctx.options.pipelines:
        raise HTTPProblem(409, "the dashboard was started without --pipelines DIR: it knows "
                               "no pipeline files to submit")
