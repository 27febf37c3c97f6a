"""Stopping and re-running pipeline runs: ``runner cancel`` and ``runner retry``."""

from __future__ import annotations

import time
from typing import Any

from runner.exceptions import PipelineError
from runner.pipeline.engine import Driver
from runner.pipeline.runs import RUN_DONE, RunRecord, StepRun, load_run, task_id


def cancel(app: Any, run_id: str) -> RunRecord:
    """Revoke what has not run; the run ends ``cancelled``."""
    driver = Driver(app, run_id)

    def mutate(record: RunRecord) -> list[str]:
        if record.state in RUN_DONE:
            raise PipelineError(f"run {run_id} is already {record.state}")
        revoke = []
        for name, step in record.steps.items():
            if step.state in ("pending", "queued", "running"):
                if step.state == "running":
                    attempt = record.attempt_of(name)
                    indexes = [None] if step.items is None else list(range(step.items))
                    revoke += [task_id(run_id, name, i, attempt) for i in indexes]
                step.state, step.ended_at, step.reason = "cancelled", time.time(), "cancelled"
        record.state, record.finished_at = "cancelled", time.time()
        return revoke

    record, revoke = driver.change(mutate)
    if revoke:
        app.control.revoke(revoke)
    return record


def retry(app: Any, run_id: str) -> RunRecord:
    """Run the failed, skipped and cancelled steps again, reusing the results of the others."""
    driver = Driver(app, run_id)

    def mutate(record: RunRecord) -> list[str]:
        if record.state == "running":
            raise PipelineError(f"run {run_id} is still running; wait for it or cancel it")
        if record.state == "success":
            raise PipelineError(f"run {run_id} succeeded; nothing to retry")
        record.attempt += 1
        for _name, step in record.steps.items():
            if step.state in ("failed", "skipped", "cancelled"):
                record.steps[_name] = StepRun(attempt=record.attempt)
        record.state, record.finished_at = "running", None
        return driver._next_steps(record)

    record, ready = driver.change(mutate)
    driver.start_steps(record, ready)
    return load_run(driver.backend, run_id)
