"""Moving pipeline runs forward: the :class:`Driver` of one run.

There is no scheduler process. ``submit`` (:mod:`runner.pipeline.submit`) enqueues the steps that
need nothing; afterwards the worker that stores the result of a step's last task calls
:func:`runner.pipeline.finish.tasks_finished`, which settles the step in one atomic update of
the run record and enqueues the steps that became ready. The atomic update is what makes a
fan-in fire exactly once: of two workers finishing the last two parents at the same moment,
only one sees the child still ``pending`` and marks it ``queued``.

A step's life: ``pending`` -> ``queued`` (ready; its tasks are then enqueued, and only after that
is ``enqueued_at`` recorded, so a crash in between leaves a step ``runner retry`` sends again) ->
``running`` (a worker started one of its tasks) -> ``success`` / ``failed`` / ``skipped`` /
``cancelled``. Task ids are deterministic, so a step enqueued twice runs its items once each
as far as the run is concerned (items are a set of indexes; a step settles once).

Delivery is at least once, as for every task: a task that runs twice finishes its item once,
and a settled step is never settled again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from runner import states
from runner.backends.base import ResultBackend, ResultRecord
from runner.events import send_event
from runner.exceptions import PipelineError
from runner.pipeline import slots
from runner.pipeline.model import Pipeline, Step
from runner.pipeline.rules import decide, need_state
from runner.pipeline.runs import (
    RUN_DONE,
    STEP_DONE,
    RunRecord,
    load_secrets,
    load_spec,
    run_key,
    task_id,
)
from runner.pipeline.starting import StepStarter
from runner.pipeline.template import RenderError, render
from runner.pipeline.validate import coerce_param

logger = logging.getLogger("runner.pipeline")


_SPECS: dict[str, Pipeline] = {}  # run id -> its pipeline (immutable once submitted)
_SPECS_KEEP = 256


def resolve_params(pipeline: Pipeline, given: dict[str, Any], run: dict[str, Any]
                   ) -> dict[str, Any]:
    """Params with defaults filled in (templates rendered) and every value of its type."""
    problems = [f"unknown param {name!r}; the pipeline has: {', '.join(pipeline.params) or '-'}"
                for name in given if name not in pipeline.params]
    values: dict[str, Any] = {}
    for name, spec in pipeline.params.items():
        if name not in given and spec.required:
            problems.append(f"param {name!r} is required (-p {name}=...)")
            continue
        try:
            value = given[name] if name in given else render(
                spec.default, {"run": run, "params": values})
            values[name] = coerce_param(name, spec, value)
        except RenderError as exc:
            problems.append(f"param {name!r}: default {exc}")
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise PipelineError(problems)
    return values


def run_context(run_id: str, name: str, logical_date: datetime) -> dict[str, Any]:
    return {"id": run_id, "pipeline": name, "name": name, "logical_date": logical_date,
            "ds": logical_date.strftime("%Y-%m-%d")}


def submit(*args: Any, **kwargs: Any) -> RunRecord:
    """Start a run (see :func:`runner.pipeline.submit.submit`)."""
    from runner.pipeline.submit import submit as submit_run

    return submit_run(*args, **kwargs)


class Driver(StepStarter):
    """Settles steps and starts the ones that became ready, for one run."""

    def __init__(self, app: Any, run_id: str, pipeline: Pipeline | None = None):
        self.app = app
        self.backend: ResultBackend = app.backend
        self.run_id = run_id
        self.pipeline = pipeline or _spec(self.backend, run_id)

    # atomic changes of the run record ------------------------------------------------------

    def change(self, mutate: Callable[[RunRecord], Any]) -> tuple[RunRecord, Any]:
        """Apply ``mutate`` to the run record atomically; return the new record and what
        ``mutate`` returned (from its last, committed call). A run that ends here gives its
        ``max_active_runs`` slot to the next run waiting."""
        outcome: list[Any] = []

        def apply(raw: bytes | None) -> bytes | None:
            if raw is None:
                raise PipelineError(f"run {self.run_id} vanished from the result backend")
            record = RunRecord.decode(raw)
            before = record.state
            outcome[:] = [mutate(record), before]
            self._finish_run_if_done(record)
            return record.encode()

        new = self.backend.update_data(run_key(self.run_id), apply)
        record = RunRecord.decode(new)
        if record.state in RUN_DONE and outcome[1] not in RUN_DONE:
            self._ended(record)
        return record, outcome[0]

    def _ended(self, record: RunRecord) -> None:
        if record.parent is not None:  # a sub-pipeline's run: its end settles the parent step
            parent = record.parent
            state = record.state if record.state in ("success", "cancelled") else "failed"
            Driver(self.app, parent["run"]).settle(
                parent["step"], state, attempt=parent["attempt"],
                error=None if state == "success" else f"sub-pipeline run {record.id} "
                                                      f"{record.state}")
        if self.pipeline.max_active_runs:
            for run_id in slots.release(self.backend, record.pipeline, record.id,
                                        self.pipeline.max_active_runs):
                Driver(self.app, run_id).begin()

    def _finish_run_if_done(self, record: RunRecord) -> None:
        """As Airflow: a run whose steps are all done failed when one of its final steps (no
        step needs them) failed, or was skipped because a step it needs failed."""
        if record.state != "running":
            return
        if all(step.state in STEP_DONE for step in record.steps.values()):
            failed = any((step.state == "failed" and not self.option(name, "ignore_failure"))
                         or step.upstream_failed
                         for name, step in record.steps.items() if name in self.final_steps())
            record.state = "failed" if failed else "success"
            record.finished_at = time.time()

    def final_steps(self) -> list[str]:
        """Steps no other step needs: what a run gives back."""
        needed = {need for step in self.pipeline.steps.values() for need in step.needs}
        return [name for name in self.pipeline.steps if name not in needed]

    def begin(self) -> None:
        """Start a run that waited for a ``max_active_runs`` slot (or was just stored)."""
        def mutate(record: RunRecord) -> list[str]:
            if record.state != "queued":
                return []
            record.state = "running"
            return self._next_steps(record)

        record, ready = self.change(mutate)
        self.start_steps(record, ready)

    def settle(self, name: str, state: str, error: str | None = None,
               reason: str | None = None, retries: int = 0, attempt: int | None = None,
               items: int | None = None) -> None:
        """Mark step ``name`` done (once) and start what became ready. With ``attempt``, only
        if the step's current attempt is that one (a late task of an earlier attempt is not)."""
        settled: list[str] = []  # this step, and those skipped because of it

        def mutate(record: RunRecord) -> list[str]:
            settled.clear()  # (the change may be tried again)
            step = record.steps[name]
            if step.state in STEP_DONE or record.state != "running":
                return []  # settled already (a task delivered twice), or run cancelled
            if attempt is not None and step.attempt != attempt:
                return []
            step.state, step.ended_at = state, time.time()
            step.error, step.reason = error, reason
            step.retries = max(step.retries, retries)
            if step.items is None and items is not None:
                step.items = items
            if step.started_at is None:
                step.started_at = step.ended_at
            settled.append(name)
            return self._next_steps(record, settled)

        record, ready = self.change(mutate)
        logger.info("Pipeline run %s: step %s %s%s", self.run_id, name, state,
                    f" ({error or reason})" if (error or reason) else "")
        announce_settled(self.app, record, settled)
        if ready:
            self.start_steps(record, ready)

    def _next_steps(self, record: RunRecord, skipped: list[str] | None = None) -> list[str]:
        """Inside an atomic change: skip what can no longer run (added to ``skipped``), queue
        what can (by each step's trigger rule)."""
        ready: list[str] = []
        changed = True
        while changed:
            changed = False
            for name, step in self.pipeline.steps.items():
                run = record.steps[name]
                if run.state != "pending":
                    continue
                seen = [need_state(record.steps[n].state, bool(self.option(n, "ignore_failure")),
                                   record.steps[n].upstream_failed) for n in step.needs]
                decision = decide(step.trigger_rule, seen)
                if decision == "run":
                    run.state = "queued"
                    ready.append(name)
                elif decision != "wait":
                    run.state, run.ended_at = "skipped", time.time()
                    run.upstream_failed = decision == "upstream_failed"
                    run.reason = self._skip_reason(record, step, seen)
                    if skipped is not None:
                        skipped.append(name)
                    changed = True
        return ready

    def _skip_reason(self, record: RunRecord, step: Step, seen: list[str]) -> str:
        if (step.trigger_rule or "all_success") == "all_success":
            blocked = next(n for n, s in zip(step.needs, seen, strict=True)
                           if s not in ("success", "failed_ok", "waiting"))
            return f"needs {blocked}, which {record.steps[blocked].state}"
        shown = ", ".join(f"{n} {record.steps[n].state}" for n in step.needs)
        return f"trigger rule {step.trigger_rule}: {shown}"

    def option(self, name: str, option: str) -> Any:
        return self.pipeline.option(self.pipeline.steps[name], option)

    def mark_running(self, names: list[tuple[str, int]]) -> None:
        """A worker started a task of each (step, attempt): ``queued`` steps become
        ``running``."""
        def mutate(record: RunRecord) -> list[str]:
            now, started = time.time(), []
            for name, attempt in names:
                step = record.steps.get(name)
                if step is not None and step.state == "queued" and step.attempt == attempt:
                    step.state, step.started_at = "running", now
                    started.append(name)
            return started

        record, started = self.change(mutate)
        for name in dict.fromkeys(started or ()):
            send_event(self.app, "step-changed", run_id=self.run_id, pipeline=record.pipeline,
                       step=name, state="running", items=record.steps[name].items)

    def context(self, record: RunRecord, step: Step) -> dict[str, Any]:
        from runner.pipeline.validate import ancestors

        steps = {}
        for need in ancestors(self.pipeline, self._name_of(step)):
            steps[need] = {"result": self.step_result(record, need),
                           "state": record.steps[need].state}
        return {"params": {**record.params, **self.secrets()}, "steps": steps,
                "run": {"id": record.id, "pipeline": record.pipeline, "name": record.pipeline,
                        "logical_date": record.logical_date,
                        "ds": record.logical_date.strftime("%Y-%m-%d")}}

    def secrets(self) -> dict[str, Any]:
        """The run's ``secret: true`` params (kept apart from its record), read once."""
        found = getattr(self, "_secrets", None)
        if found is None:
            found = self._secrets = load_secrets(self.backend, self.run_id)
        return found

    def _name_of(self, step: Step) -> str:
        return next(name for name, s in self.pipeline.steps.items() if s is step)

    def step_result(self, record: RunRecord, name: str) -> Any:
        """A step's result: its task's value, or the list of its items' values in order."""
        run = record.steps[name]
        if run.state not in ("success", "failed"):
            return None
        if self.pipeline.steps[name].pipeline is not None:
            from runner.pipeline.subs import child_run_id

            return self._child_result(run.child or child_run_id(record.id, name, run.attempt))
        ids = step_task_ids(record, name)
        found = self.backend.get_many(ids)
        accept = self.app.result_accept
        values = [_value(found.get(i), accept) for i in ids]
        return values[0] if run.items is None else values

    def _child_result(self, child_id: str | None) -> Any:
        """A sub-pipeline's result: its final step's (by name when it has several)."""
        from runner.pipeline.runs import load_run

        if child_id is None:
            return None
        child = Driver(self.app, child_id)
        record = load_run(self.backend, child_id)
        finals = child.final_steps()
        values = {name: child.step_result(record, name) for name in finals}
        return values[finals[0]] if len(finals) == 1 else values

def step_task_ids(record: RunRecord, name: str) -> list[str]:
    """The ids of a step's tasks (of its current attempt), in item order."""
    run, attempt = record.steps[name], record.attempt_of(name)
    if run.items is None:
        return [task_id(record.id, name, None, attempt)]
    return [task_id(record.id, name, i, attempt) for i in range(run.items)]


def announce_settled(app: Any, record: RunRecord, names: list[str]) -> None:
    """``step-changed`` events of the steps one settle ended (the step, and those skipped
    because of it), and ``run-finished`` from the settle that ended the run (the one whose
    steps ended last)."""
    for name in names:
        step = record.steps[name]
        send_event(app, "step-changed", run_id=record.id, pipeline=record.pipeline, step=name,
                   state=step.state, error=step.error or step.reason)
    ended = max((record.steps[name].ended_at or 0.0 for name in names), default=None)
    if record.state in ("success", "failed") and ended and ended >= max(
            (s.ended_at or 0.0) for s in record.steps.values()):
        send_event(app, "run-finished", run_id=record.id, pipeline=record.pipeline,
                   state=record.state, runtime=(record.finished_at or ended)
                   - record.created_at)


def _value(record: ResultRecord | None, accept: frozenset[str]) -> Any:
    if record is None or record.state != states.SUCCESS:
        return None
    return record.value(accept)


def _spec(backend: ResultBackend, run_id: str) -> Pipeline:
    """A run's pipeline, read and validated once per process."""
    pipeline = _SPECS.get(run_id)
    if pipeline is None:
        pipeline = Pipeline.model_validate(load_spec(backend, run_id))
        if len(_SPECS) >= _SPECS_KEEP:
            _SPECS.pop(next(iter(_SPECS)))
        _SPECS[run_id] = pipeline
    return pipeline
