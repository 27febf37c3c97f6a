"""Moving pipeline runs forward: submit, step finished, cancel, retry.

There is no scheduler process. ``submit`` enqueues the steps that need nothing; afterwards the
worker that stores the result of a step's last task calls :func:`task_finished`, which settles
the step in one atomic update of the run record and enqueues the steps that became ready. The
atomic update is what makes a fan-in fire exactly once: of two workers finishing the last two
parents at the same moment, only one sees the child still ``pending`` and marks it ``queued``.

Delivery is at least once, as for every task: a task that runs twice finishes its item once
(items are a set of indexes), and a step settles once (a settled step is never settled again).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from runner import serialization, states
from runner.backends.base import ResultBackend, ResultRecord
from runner.events import send_event
from runner.exceptions import PipelineError
from runner.message import (
    HEADER_ATTEMPT,
    HEADER_INDEX,
    HEADER_ITEMS,
    HEADER_RUN,
    HEADER_STEP,
    Message,
)
from runner.middleware import Middleware
from runner.pipeline.model import Pipeline, Step
from runner.pipeline.runs import (
    STEP_DONE,
    RunRecord,
    StepRun,
    items_key,
    load_run,
    load_spec,
    new_run_id,
    run_key,
    save_spec,
    task_id,
)
from runner.pipeline.template import RenderError, render
from runner.pipeline.validate import LoadedPipeline, coerce_param

logger = logging.getLogger("runner.pipeline")


_SPECS: dict[str, Pipeline] = {}  # run id -> its pipeline (immutable once submitted)
_SPECS_KEEP = 256


# -- submitting ---------------------------------------------------------------------------------


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


def submit(app: Any, loaded: LoadedPipeline, params: dict[str, Any] | None = None,
           logical_date: datetime | None = None, run_id: str | None = None) -> RunRecord:
    """Start a run: store its record and enqueue the steps that need nothing."""
    pipeline = loaded.model
    if not app.backend.keeps_state:  # rpc://: results go to the caller and are gone once read
        raise PipelineError(
            f"pipeline {pipeline.name!r} cannot run with result_backend "
            f"{app.backend.scheme}://: a run keeps its record and the steps' results in the "
            f"result backend, which rpc:// does not keep; set result_backend to redis:// or "
            f"sqlite:///... (broker_url can stay amqp://)")
    run_id = run_id or new_run_id()
    logical_date = logical_date or app.now()
    if logical_date.tzinfo is None:
        logical_date = logical_date.replace(tzinfo=app.tz)
    logical_date = logical_date.astimezone(app.tz)  # run.ds is the date in the app's zone
    values = resolve_params(pipeline, params or {},
                            run_context(run_id, pipeline.name, logical_date))
    record = RunRecord(id=run_id, pipeline=pipeline.name, file=loaded.path,
                       file_hash=loaded.sha256, params=values, logical_date=logical_date,
                       app=pipeline.app, created_at=time.time(),
                       steps={name: StepRun() for name in pipeline.steps})
    backend = app.backend
    save_spec(backend, run_id, pipeline.model_dump(mode="json"))
    ready = [name for name, step in pipeline.steps.items() if not step.needs]
    for name in ready:
        record.steps[name].state = "queued"
    backend.put_data(run_key(run_id), record.encode())
    send_event(app, "run-started", run_id=run_id, pipeline=pipeline.name,
               steps=list(pipeline.steps))
    Driver(app, run_id, pipeline).start_steps(record, ready)
    return load_run(backend, run_id)


# -- the driver: one run, seen from one process --------------------------------------------------


class Driver:
    """Settles steps and starts the ones that became ready, for one run."""

    def __init__(self, app: Any, run_id: str, pipeline: Pipeline | None = None):
        self.app = app
        self.backend: ResultBackend = app.backend
        self.run_id = run_id
        self.pipeline = pipeline or _spec(self.backend, run_id)

    # atomic changes of the run record ------------------------------------------------------

    def change(self, mutate: Callable[[RunRecord], Any]) -> tuple[RunRecord, Any]:
        """Apply ``mutate`` to the run record atomically; return the new record and what
        ``mutate`` returned (from its last, committed call)."""
        outcome: list[Any] = []

        def apply(raw: bytes | None) -> bytes | None:
            if raw is None:
                raise PipelineError(f"run {self.run_id} vanished from the result backend")
            record = RunRecord.decode(raw)
            outcome[:] = [mutate(record)]
            self._finish_run_if_done(record)
            return record.encode()

        new = self.backend.update_data(run_key(self.run_id), apply)
        return RunRecord.decode(new), outcome[0]

    def _finish_run_if_done(self, record: RunRecord) -> None:
        if record.state != "running":
            return
        if all(step.state in STEP_DONE for step in record.steps.values()):
            failed = any(step.state == "failed" and not self.option(name, "ignore_failure")
                         for name, step in record.steps.items())
            record.state = "failed" if failed else "success"
            record.finished_at = time.time()

    def settle(self, name: str, state: str, error: str | None = None,
               reason: str | None = None, retries: int = 0, attempt: int | None = None
               ) -> None:
        """Mark step ``name`` done (once) and start what became ready. With ``attempt``, only
        if the step's current attempt is that one (a late task of an earlier attempt is not)."""
        def mutate(record: RunRecord) -> list[str]:
            step = record.steps[name]
            if step.state in STEP_DONE or record.state != "running":
                return []  # settled already (a task delivered twice), or run cancelled
            if attempt is not None and step.attempt != attempt:
                return []
            step.state, step.ended_at = state, time.time()
            step.error, step.reason = error, reason
            step.retries = max(step.retries, retries)
            if step.started_at is None:
                step.started_at = step.ended_at
            return self._next_steps(record)

        record, ready = self.change(mutate)
        logger.info("Pipeline run %s: step %s %s%s", self.run_id, name, state,
                    f" ({error or reason})" if (error or reason) else "")
        announce_settled(self.app, record, name, state, error or reason)
        if ready:
            self.start_steps(record, ready)

    def _next_steps(self, record: RunRecord) -> list[str]:
        """Inside an atomic change: skip what can no longer run, queue what can."""
        changed = True
        while changed:
            changed = False
            for name, step in self.pipeline.steps.items():
                run = record.steps[name]
                if run.state != "pending":
                    continue
                blocked = [need for need in step.needs if self._blocks(record, need)]
                if blocked:
                    run.state, run.ended_at = "skipped", time.time()
                    run.reason = f"needs {blocked[0]}, which {record.steps[blocked[0]].state}"
                    changed = True
        ready = []
        for name, step in self.pipeline.steps.items():
            run = record.steps[name]
            if run.state == "pending" and all(
                    record.steps[need].state in ("success", "failed") and not
                    self._blocks(record, need) for need in step.needs):
                run.state = "queued"
                ready.append(name)
        return ready

    def _blocks(self, record: RunRecord, need: str) -> bool:
        state = record.steps[need].state
        if state == "failed":
            return not self.option(need, "ignore_failure")
        return state in ("skipped", "cancelled")

    def option(self, name: str, option: str) -> Any:
        return self.pipeline.option(self.pipeline.steps[name], option)

    # starting steps ------------------------------------------------------------------------

    def start_steps(self, record: RunRecord, names: list[str]) -> None:
        for name in names:
            self.start_step(record, name)

    def start_step(self, record: RunRecord, name: str) -> None:
        step = self.pipeline.steps[name]
        try:
            context = self.context(record, step)
            if step.when is not None and not render(step.when, context):
                self.settle(name, "skipped", reason=f"when {step.when!r} is false")
                return
            items = None
            if step.map is not None:
                items = render(step.map, context)
                if not isinstance(items, list | tuple):
                    raise PipelineError(f"map {step.map!r} gave {type(items).__name__}, "
                                        f"not a list")
            messages = self.messages(record, name, step, context, items)
        except Exception as exc:  # noqa: BLE001 - a template failing at run time fails the step
            cause = exc if isinstance(exc, RenderError | PipelineError) else \
                f"{type(exc).__name__}: {exc}"
            error = f"step {name!r}: {cause}"
            logger.error("Pipeline run %s: %s", self.run_id, error)
            self.settle(name, "failed", error=error)
            return
        count = None if items is None else len(items)

        def mark_running(run: RunRecord) -> bool:
            step_run = run.steps[name]
            if step_run.state != "queued":
                return False
            step_run.state, step_run.started_at, step_run.items = "running", time.time(), count
            return True

        _, go = self.change(mark_running)
        if not go:
            return
        send_event(self.app, "step-changed", run_id=self.run_id, pipeline=record.pipeline,
                   step=name, state="running", items=count)
        if count == 0:
            self.settle(name, "success")
            return
        self.app.publish(messages)

    def context(self, record: RunRecord, step: Step) -> dict[str, Any]:
        from runner.pipeline.validate import ancestors

        steps = {}
        for need in ancestors(self.pipeline, self._name_of(step)):
            steps[need] = {"result": self.step_result(record, need),
                           "state": record.steps[need].state}
        return {"params": record.params, "steps": steps,
                "run": {"id": record.id, "pipeline": record.pipeline, "name": record.pipeline,
                        "logical_date": record.logical_date,
                        "ds": record.logical_date.strftime("%Y-%m-%d")}}

    def _name_of(self, step: Step) -> str:
        return next(name for name, s in self.pipeline.steps.items() if s is step)

    def step_result(self, record: RunRecord, name: str) -> Any:
        """A step's result: its task's value, or the list of its items' values in order."""
        run = record.steps[name]
        if run.state not in ("success", "failed"):
            return None
        if run.items is None:
            ids = [task_id(record.id, name, None, record.attempt_of(name))]
        else:
            ids = [task_id(record.id, name, i, record.attempt_of(name))
                   for i in range(run.items)]
        found = self.backend.get_many(ids)
        accept = self.app.result_accept
        values = [_value(found.get(i), accept) for i in ids]
        return values[0] if run.items is None else values

    def messages(self, record: RunRecord, name: str, step: Step, context: dict[str, Any],
                 items: list | None) -> list[Message]:
        option = lambda key: self.option(name, key)  # noqa: E731
        attempt = record.attempt_of(name)
        retries = option("retries")
        options: dict[str, Any] = {
            "queue": option("queue"), "priority": option("priority"),
            "time_limit": option("timeout"), "soft_time_limit": option("soft_timeout"),
            "serializer": option("serializer"), "ignore_result": False,
            "headers": {HEADER_RUN: record.id, HEADER_STEP: name, HEADER_ATTEMPT: attempt},
        }
        if retries:
            options["step_retries"] = {"max_retries": retries,
                                       "backoff": option("retry_backoff"),
                                       "delay": option("retry_delay")}
        out = []
        for index, item in (enumerate(items) if items is not None else [(None, None)]):
            local = context if index is None else {**context, "item": item, "index": index}
            args = render(step.args, local)
            kwargs = render(step.kwargs, local)
            headers = {**options["headers"], HEADER_INDEX: index,
                       HEADER_ITEMS: None if items is None else len(items)}
            out.append(self.app.build_message(
                step.task, args, kwargs, task_id=task_id(record.id, name, index, attempt),
                root_id=record.id, **{**options, "headers": headers}))
        return out


def announce_settled(app: Any, record: RunRecord, name: str, state: str,
                     why: str | None) -> None:
    """``step-changed`` events, and ``run-finished`` from the settle that ended the run (the
    step settled last)."""
    send_event(app, "step-changed", run_id=record.id, pipeline=record.pipeline, step=name,
               state=state, error=why)
    ended = record.steps[name].ended_at
    if record.state in ("success", "failed") and ended is not None and ended >= max(
            (s.ended_at or 0.0) for s in record.steps.values()):
        send_event(app, "run-finished", run_id=record.id, pipeline=record.pipeline,
                   state=record.state, runtime=(record.finished_at or ended)
                   - record.created_at)


def _value(record: ResultRecord | None, accept: frozenset[str]) -> Any:
    if record is None or record.state != states.SUCCESS:
        return None
    return serialization.loads(record.payload, record.content_type, accept)


# -- called by the worker when a pipeline task is done --------------------------------------------


def _spec(backend: ResultBackend, run_id: str) -> Pipeline:
    """A run's pipeline, read and validated once per process."""
    pipeline = _SPECS.get(run_id)
    if pipeline is None:
        pipeline = Pipeline.model_validate(load_spec(backend, run_id))
        if len(_SPECS) >= _SPECS_KEEP:
            _SPECS.pop(next(iter(_SPECS)))
        _SPECS[run_id] = pipeline
    return pipeline


def tasks_finished(app: Any, completed: list[tuple[Message, str, ResultRecord | None]]
                   ) -> None:
    """Tasks of pipeline steps reached a final state (their results are stored).

    A single task settles its step. A mapped step's task adds its index to the step's set of
    finished items, all of one batch in one round trip; the task that completes the set
    settles the step. No run record is read per task."""
    backend = app.backend
    items = []
    for message, state, record in completed:
        headers = message.headers
        run_id, name = headers[HEADER_RUN], headers[HEADER_STEP]
        index, attempt = headers.get(HEADER_INDEX), headers.get(HEADER_ATTEMPT, 1)
        retries = int(record.meta.get("retries", 0)) if record is not None else 0
        error = _error_text(record) if state != states.SUCCESS else None
        if index is None:
            Driver(app, run_id).settle(name, "success" if state == states.SUCCESS else
                                       "cancelled" if state == states.REVOKED else "failed",
                                       error=error, retries=retries, attempt=attempt)
            continue
        key = items_key(run_id, name, attempt)
        if state != states.SUCCESS:
            _note_failure(backend, key, str(index), error)
        items.append((key, str(index), headers, retries))
    if not items:
        return
    counts = backend.add_to_sets([(key, index) for key, index, _, _ in items])
    for (key, _index, headers, retries), (added, done) in zip(items, counts, strict=True):
        total = headers.get(HEADER_ITEMS)
        if added and total is not None and done == total:
            _settle_mapped(app, headers, key, total, retries)


def _settle_mapped(app: Any, headers: dict, key: str, total: int, retries: int) -> None:
    driver = Driver(app, headers[HEADER_RUN])
    name, attempt = headers[HEADER_STEP], headers.get(HEADER_ATTEMPT, 1)
    failures = app.backend.get_data(f"{key}:failed")
    if failures:
        info = json.loads(failures)
        driver.settle(name, "failed", error=f"{len(info['items'])} of {total} items failed; "
                      f"first: {info['first_error']}", retries=retries, attempt=attempt)
    else:
        driver.settle(name, "success", retries=retries, attempt=attempt)


def _note_failure(backend: ResultBackend, key: str, index: str, error: str | None) -> None:
    """Remember a failed item (before it counts as finished, so the last one sees it)."""
    def add(raw: bytes | None) -> bytes:
        info = json.loads(raw) if raw else {"items": [], "first_error": None}
        if index not in info["items"]:
            info["items"].append(index)
            info["first_error"] = info["first_error"] or error
        return json.dumps(info).encode()

    backend.update_data(f"{key}:failed", add)


def _error_text(record: ResultRecord | None) -> str | None:
    if record is None:
        return None
    try:
        info = serialization.loads(record.payload, record.content_type)
        return f"{info.get('exc_type')}: {' '.join(map(str, info.get('exc_message', [])))}"
    except Exception:  # noqa: BLE001 - a description only
        return record.state


class PipelineMiddleware(Middleware):
    """Moves a run forward when a task of one of its steps reaches a final state."""

    def wants(self, message: Message) -> bool:
        return HEADER_RUN in message.headers

    def after_task_stored(self, app: Any, message: Message, state: str,
                          record: ResultRecord | None) -> None:
        if HEADER_RUN in message.headers:
            tasks_finished(app, [(message, state, record)])

    def after_tasks_stored(self, app: Any,
                           completed: list[tuple[Message, str, ResultRecord | None]]) -> None:
        tasks_finished(app, [c for c in completed if HEADER_RUN in c[0].headers])
