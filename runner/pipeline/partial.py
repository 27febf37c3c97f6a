"""Partial runs for a developer's loop: ``--from STEP`` (it and what comes after it) and
``--only STEP[,STEP]``, taking the results of the steps they need from an earlier run
(``--reuse RUN``, by default the last successful run of the pipeline).

The reused results are copied to the new run's task ids before its record is stored, so the
new run reads like any other: ``runner status``, ``runner result RUN STEP`` and templates see
the reused steps as ``success``, with ``reason`` naming the run they came from.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable
from typing import Any

from runner.backends.base import ResultRecord
from runner.exceptions import PipelineError
from runner.pipeline.engine import step_task_ids
from runner.pipeline.model import Pipeline
from runner.pipeline.runs import RunRecord, list_runs, load_run, task_id
from runner.pipeline.validate import LoadedPipeline, ancestors


def _check_step(loaded: LoadedPipeline, name: str, option: str) -> None:
    model = loaded.model
    if name not in model.steps:
        hint = difflib.get_close_matches(name, list(model.steps), n=1)
        raise PipelineError(f"{loaded.path}: {option} {name!r} is not a step of pipeline "
                            f"{model.name!r}" + (f"; did you mean {hint[0]!r}?" if hint else
                                                 f"; its steps: {', '.join(model.steps)}"))


def descendants(model: Pipeline, name: str) -> set[str]:
    found = {name}
    changed = True
    while changed:
        changed = False
        for other, step in model.steps.items():
            if other not in found and found & set(step.needs):
                found.add(other)
                changed = True
    return found


def selected_steps(loaded: LoadedPipeline, start: str | None, only: str | None
                   ) -> set[str] | None:
    """The steps a partial run runs (None: all); PipelineError naming the file for a step
    that does not exist."""
    if start is None and only is None:
        return None
    if start is not None and only is not None:
        raise PipelineError("give --from or --only, not both")
    if start is not None:
        _check_step(loaded, start, "--from")
        return descendants(loaded.model, start)
    names = [n.strip() for n in only.split(",") if n.strip()]
    for name in names:
        _check_step(loaded, name, "--only")
    return set(names)


def run_to_reuse(app: Any, loaded: LoadedPipeline, run_id: str | None,
                 needed: set[str]) -> RunRecord | None:
    """The run whose results a partial run takes (None when it needs none)."""
    name = loaded.model.name
    if run_id is None:
        if not needed:
            return None
        done = [r for r in list_runs(app.backend) if r.pipeline == name and r.state == "success"]
        if not done:
            raise PipelineError(f"no successful run of pipeline {name!r} to take the results "
                                f"of {', '.join(sorted(needed))} from; run it in full once, "
                                f"or name a run with --reuse RUN")
        return max(done, key=lambda r: r.created_at)
    record = load_run(app.backend, run_id)
    if record.pipeline != name:
        raise PipelineError(f"--reuse {run_id}: that is a run of pipeline {record.pipeline!r}, "
                            f"not of {name!r} ({loaded.path})")
    for step in sorted(needed):
        state = record.steps[step].state if step in record.steps else "missing"
        if state != "success":
            raise PipelineError(f"--reuse {run_id}: step {step!r} is {state} there; its result "
                                f"is needed (retry that run, or reuse another)")
    return record


def plan(app: Any, loaded: LoadedPipeline, start: str | None, only: str | None,
         reuse: str | None) -> Callable[[RunRecord], None] | None:
    """What ``submit_run(prepare=...)`` calls on a partial run's new record: every error is
    raised here, before anything is stored or sent."""
    chosen = selected_steps(loaded, start, only)
    if chosen is None:
        if reuse is not None:
            raise PipelineError("--reuse takes effect with --from or --only")
        return None
    model = loaded.model
    needed = set().union(*(ancestors(model, name) for name in chosen)) - chosen
    source = run_to_reuse(app, loaded, reuse, needed)

    def prepare(record: RunRecord) -> None:
        now = time.time()
        for name, step in record.steps.items():
            if name in chosen:
                continue
            if name in needed:
                _copy_step(app, source, record, name)
                old = source.steps[name]
                step.state, step.items, step.child = "success", old.items, old.child
                step.started_at, step.ended_at = now, now
                step.reason = f"reused from run {source.id}"
            else:
                step.state, step.ended_at = "skipped", now
                step.reason = "not selected (--from / --only)"
        record.reused_from = source.id if source is not None else None

    return prepare


def _copy_step(app: Any, source: RunRecord, record: RunRecord, name: str) -> None:
    if source.steps[name].child is not None:
        return  # a sub-pipeline step: its result is its run's, which the new record names
    backend = app.backend
    old_ids = step_task_ids(source, name)
    found = backend.get_many(old_ids)
    items = source.steps[name].items
    indexes = [None] if items is None else list(range(items))
    backend.store([ResultRecord(task_id(record.id, name, index, 1), found[old].state,
                                found[old].content_type, found[old].payload,
                                date_done=found[old].date_done, meta=dict(found[old].meta))
                   for index, old in zip(indexes, old_ids, strict=True) if old in found])
