"""Stopping and re-running pipeline runs: ``runner cancel`` and ``runner retry``."""

from __future__ import annotations

import json
import time
from typing import Any

from runner import states
from runner.backends.base import ResultRecord
from runner.exceptions import PipelineError
from runner.pipeline import slots
from runner.pipeline.engine import Driver, step_task_ids
from runner.pipeline.runs import (
    RUN_DONE,
    RunRecord,
    StepRun,
    items_key,
    load_run,
    reused_key,
    task_id,
)


def cancel(app: Any, run_id: str) -> RunRecord:
    """Revoke what has not run; the run ends ``cancelled`` (a run waiting for a
    ``max_active_runs`` slot leaves the line)."""
    driver = Driver(app, run_id)

    def mutate(record: RunRecord) -> list[str]:
        if record.state in RUN_DONE:
            raise PipelineError(f"run {run_id} is already {record.state}")
        revoke = []
        for name, step in record.steps.items():
            if step.state in ("pending", "queued", "running"):
                if step.state != "pending":
                    attempt = record.attempt_of(name)
                    indexes = [None] if step.items is None else list(range(step.items))
                    revoke += [task_id(run_id, name, i, attempt) for i in indexes]
                step.state, step.ended_at, step.reason = "cancelled", time.time(), "cancelled"
        record.state, record.finished_at = "cancelled", time.time()
        return revoke

    record, revoke = driver.change(mutate)
    if revoke:
        app.control.revoke(revoke)
    for step in record.steps.values():  # sub-pipelines' runs stop too
        if step.child is not None:
            try:
                cancel(app, step.child)
            except PipelineError:
                pass  # ended already
    return record


def retry(app: Any, run_id: str) -> RunRecord:
    """Run the failed, skipped and cancelled steps again, reusing the results of the others;
    of a mapped step whose needs are kept, only the items that did not succeed run again.
    A run still ``running`` with steps that were never enqueued (the process starting them
    died first) gets those steps sent again."""
    driver = Driver(app, run_id)
    record = load_run(driver.backend, run_id)
    if record.state in ("running", "queued"):
        return _resend_stuck(driver, record)
    if record.state == "success":
        raise PipelineError(f"run {run_id} succeeded; nothing to retry")
    attempt = record.attempt + 1
    again = [name for name, step in record.steps.items()
             if step.state in ("failed", "skipped", "cancelled")]
    kept = {name: _kept_items(driver, record, name, attempt) for name in again
            if record.steps[name].items and all(
                need not in again for need in driver.pipeline.steps[name].needs)}

    limit = driver.pipeline.max_active_runs  # a retried run takes a slot again, or waits
    admitted = limit is None or slots.admit(driver.backend, record.pipeline, run_id, limit)

    def mutate(record: RunRecord) -> list[str]:
        if record.state in ("running", "queued"):
            raise PipelineError(f"run {run_id} is still {record.state}; wait for it or cancel it")
        record.attempt = attempt
        for name in again:
            record.steps[name] = StepRun(attempt=attempt, reused=len(kept.get(name) or ()))
        record.finished_at = None
        if not admitted:
            record.state = "queued"  # begun when a slot frees (see Driver._ended)
            return []
        record.state = "running"
        return driver._next_steps(record)

    record, ready = driver.change(mutate)
    driver.start_steps(record, ready)
    return load_run(driver.backend, run_id)


def _kept_items(driver: Driver, record: RunRecord, name: str, attempt: int) -> list[int]:
    """Copy the results of a mapped step's items that succeeded to the ids of ``attempt`` and
    count them finished there: only the others run again. Written before the run record
    says so, so a crash in between leaves a run that retries everything, as before."""
    backend = driver.backend
    old_ids = step_task_ids(record, name)
    found = backend.get_many(old_ids)
    kept = [i for i, old in enumerate(old_ids)
            if found.get(old) is not None and found[old].state == states.SUCCESS]
    if not kept:
        return []
    backend.store([ResultRecord(task_id(record.id, name, i, attempt), states.SUCCESS,
                                found[old_ids[i]].content_type, found[old_ids[i]].payload,
                                date_done=found[old_ids[i]].date_done,
                                meta=dict(found[old_ids[i]].meta)) for i in kept])
    backend.put_data(reused_key(record.id, name, attempt), json.dumps(kept).encode())
    backend.add_to_sets([(items_key(record.id, name, attempt), str(i)) for i in kept])
    return kept


def _resend_stuck(driver: Driver, record: RunRecord) -> RunRecord:
    """A run a crash left half started: stored but never begun (``queued`` and in no
    ``max_active_runs`` line), or with steps marked ready but never enqueued."""
    if record.state == "queued":
        limit = driver.pipeline.max_active_runs
        line = slots.occupancy(driver.backend, record.pipeline)
        if limit is not None and record.id in line["waiting"]:
            raise PipelineError(f"run {record.id} is queued for one of "
                                f"{record.pipeline!r}'s max_active_runs slots; wait for it "
                                f"or cancel it")
        if limit is None or slots.admit(driver.backend, record.pipeline, record.id, limit):
            driver.begin()
        return load_run(driver.backend, record.id)
    stuck = [name for name, step in record.steps.items()
             if step.state == "queued" and step.enqueued_at is None]
    if not stuck:
        raise PipelineError(f"run {record.id} is still {record.state}; wait for it or cancel it")
    driver.start_steps(record, stuck)
    return load_run(driver.backend, record.id)
