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

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from runner import serialization, states
from runner.backends.base import ResultBackend, ResultRecord
from runner.exceptions import PipelineError
from runner.message import (
    HEADER_ATTEMPT,
    HEADER_INDEX,
    HEADER_ITEMS,
    HEADER_RUN,
    HEADER_STEP,
    Message,
)
from runner.pipeline import slots
from runner.pipeline.model import Pipeline, Step
from runner.pipeline.rules import decide, need_state
from runner.pipeline.runs import (
    RUN_DONE,
    STEP_DONE,
    RunRecord,
    load_spec,
    reused_key,
    run_key,
    task_id,
)
from runner.pipeline.template import RenderError, render
from runner.pipeline.validate import coerce_param

logger = logging.getLogger("runner.pipeline")

#: headers of a mapped step with ``concurrency:`` (how many items in flight, how many were
#: kept from an earlier attempt), read back when an item finishes to send the next one
HEADER_CONCURRENCY = "pipeline_concurrency"
HEADER_REUSED = "pipeline_reused"

_SPECS: dict[str, Pipeline] = {}  # run id -> its pipeline (immutable once submitted)
_SPECS_KEEP = 256
_ITEMS: dict[tuple[str, str, int], tuple[dict, list, list[int]]] = {}  # rendered maps, per process
_ITEMS_KEEP = 64


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
        def mutate(record: RunRecord) -> list[str]:
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
            return self._next_steps(record)

        record, ready = self.change(mutate)
        logger.info("Pipeline run %s: step %s %s%s", self.run_id, name, state,
                    f" ({error or reason})" if (error or reason) else "")
        if ready:
            self.start_steps(record, ready)

    def _next_steps(self, record: RunRecord) -> list[str]:
        """Inside an atomic change: skip what can no longer run, queue what can (by each
        step's trigger rule)."""
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
        def mutate(record: RunRecord) -> None:
            now = time.time()
            for name, attempt in names:
                step = record.steps.get(name)
                if step is not None and step.state == "queued" and step.attempt == attempt:
                    step.state, step.started_at = "running", now

        self.change(mutate)

    # starting steps ------------------------------------------------------------------------

    def start_steps(self, record: RunRecord, names: list[str]) -> None:
        for name in names:
            self.start_step(record, name)

    def start_step(self, record: RunRecord, name: str) -> None:
        """Enqueue the tasks of ``queued`` step ``name``, then record that they are enqueued."""
        step = self.pipeline.steps[name]
        attempt = record.attempt_of(name)
        if step.pipeline is not None:
            self.start_sub(record, name, step)
            return
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
                items = list(items)
            todo = self.todo(record, name, items)
            limit = step.concurrency
            first = todo if limit is None else todo[:limit]
            messages = self.messages(record, name, step, context, items, first,
                                     0 if items is None else len(items) - len(todo))
        except Exception as exc:  # noqa: BLE001 - a template failing at run time fails the step
            cause = exc if isinstance(exc, RenderError | PipelineError) else \
                f"{type(exc).__name__}: {exc}"
            error = f"step {name!r}: {cause}"
            logger.error("Pipeline run %s: %s", self.run_id, error)
            self.settle(name, "failed", error=error)
            return
        count = None if items is None else len(items)
        if items is not None:
            _remember(record.id, name, attempt, context, items, todo)
        if count is not None and not todo:
            self.settle(name, "success", items=count, attempt=attempt)
            return
        self.app.publish(messages)
        self.app.broker.flush()  # safe in the broker (streamed, confirmed) before it is recorded
        queue = messages[0].queue if messages else None

        def enqueued(run: RunRecord) -> None:
            step_run = run.steps[name]
            if step_run.attempt != attempt:
                return
            if step_run.items is None:
                step_run.items = count
            if step_run.state in ("queued", "running"):
                step_run.enqueued_at, step_run.queue = time.time(), queue

        self.change(enqueued)

    def start_sub(self, record: RunRecord, name: str, step: Step) -> None:
        """Start the child run of sub-pipeline step ``name`` (one per attempt: keyed)."""
        from runner.pipeline.submit import submit_run
        from runner.pipeline.subs import child_run_id, load_sub

        attempt = record.attempt_of(name)
        child_id = child_run_id(record.id, name, attempt)
        try:
            context = self.context(record, step)
            if step.when is not None and not render(step.when, context):
                self.settle(name, "skipped", reason=f"when {step.when!r} is false")
                return
            params = render(step.params, context)
            child = load_sub(self.backend, record.id, name)

            def link(run: RunRecord) -> None:
                run.parent = {"run": record.id, "step": name, "attempt": attempt}

            submit_run(self.app, child, params, logical_date=record.logical_date,
                       run_id=child_id, key=child_id, prepare=link)
        except Exception as exc:  # noqa: BLE001 - params that fail fail the step
            cause = exc if isinstance(exc, RenderError | PipelineError) else \
                f"{type(exc).__name__}: {exc}"
            self.settle(name, "failed", error=f"step {name!r}: sub-pipeline: {cause}")
            return

        def started(run: RunRecord) -> None:
            step_run = run.steps[name]
            if step_run.attempt == attempt and step_run.state in ("queued", "running"):
                now = time.time()
                step_run.state, step_run.started_at, step_run.enqueued_at = "running", now, now
            if step_run.attempt == attempt:
                step_run.child = child_id

        self.change(started)

    def todo(self, record: RunRecord, name: str, items: list | None) -> list[int | None]:
        """Indexes to send: every item, less those kept from an earlier attempt."""
        if items is None:
            return [None]
        if not record.steps[name].reused:
            return list(range(len(items)))
        raw = self.backend.get_data(reused_key(record.id, name, record.attempt_of(name)))
        kept = set(json.loads(raw)) if raw else set()
        return [i for i in range(len(items)) if i not in kept]

    def send_item(self, name: str, attempt: int, position: int) -> None:
        """With ``concurrency:``: an item finished; send the one at ``position`` of the
        step's list of items to send, if there is one."""
        key = (self.run_id, name, attempt)
        if key not in _ITEMS:
            from runner.pipeline.runs import load_run

            record = load_run(self.backend, self.run_id)
            step = self.pipeline.steps[name]
            context = self.context(record, step)
            items = list(render(step.map, context))
            _remember(self.run_id, name, attempt, context, items,
                      self.todo(record, name, items))
        context, items, todo = _ITEMS[key]
        if position >= len(todo):
            return
        record_view = _RecordView(self.run_id, {name: attempt})
        self.app.publish(self.messages(record_view, name, self.pipeline.steps[name], context,
                                       items, [todo[position]], len(items) - len(todo)))

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
        if self.pipeline.steps[name].pipeline is not None:
            from runner.pipeline.subs import child_run_id

            return self._child_result(run.child or child_run_id(record.id, name, run.attempt))
        ids = step_task_ids(record, name)
        found = self.backend.get_many(ids)
        accept = self.app.result_accept
        values = [_value(found.get(i), accept) for i in ids]
        return values[0] if run.items is None else values

    def _booked(self, name: str, step: Step, count: int) -> list[float]:
        return _booked_slots(self, name, step, count)

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

    def messages(self, record: Any, name: str, step: Step, context: dict[str, Any],
                 items: list | None, indexes: list[int | None], reused: int = 0
                 ) -> list[Message]:
        option = lambda key: self.option(name, key)  # noqa: E731
        attempt = record.attempt_of(name)
        retries = option("retries")
        base = {HEADER_RUN: record.id, HEADER_STEP: name, HEADER_ATTEMPT: attempt}
        if step.concurrency is not None and items is not None:
            base[HEADER_CONCURRENCY] = step.concurrency
            base[HEADER_REUSED] = reused
        options: dict[str, Any] = {
            "queue": option("queue"), "priority": option("priority"),
            "time_limit": option("timeout"), "soft_time_limit": option("soft_timeout"),
            "serializer": option("serializer"), "ignore_result": False,
        }
        if retries:
            options["step_retries"] = {"max_retries": retries,
                                       "backoff": option("retry_backoff"),
                                       "delay": option("retry_delay")}
        etas = self._booked(name, step, len(indexes))
        out = []
        for position, index in enumerate(indexes):
            if etas:
                options["eta"] = etas[position]
            local = context if index is None else {**context, "item": items[index],
                                                   "index": index}
            args = render(step.args, local)
            kwargs = render(step.kwargs, local)
            headers = {**base, HEADER_INDEX: index,
                       HEADER_ITEMS: None if items is None else len(items)}
            out.append(self.app.build_message(
                step.task, args, kwargs, task_id=task_id(record.id, name, index, attempt),
                root_id=record.id, headers=headers, **options))
        return out


def _booked_slots(driver: Driver, name: str, step: Step, count: int) -> list[float]:
    """Start times booked for ``count`` tasks of a step with ``rate_limit`` (none without)."""
    rate = driver.option(name, "rate_limit")
    if not rate or not count:
        return []
    from runner.pipeline.ratelimit import book

    scope = driver.option(name, "rate_limit_scope") or "step"
    key = f"task:{step.task}" if scope == "task" else f"step:{driver.pipeline.name}.{name}"
    return book(driver.backend, key, rate, count)


class _RecordView:
    """What :meth:`Driver.messages` reads of a run record, without reading the record."""

    def __init__(self, run_id: str, attempts: dict[str, int]):
        self.id, self._attempts = run_id, attempts

    def attempt_of(self, name: str) -> int:
        return self._attempts[name]


def _remember(run_id: str, name: str, attempt: int, context: dict, items: list,
              todo: list) -> None:
    if len(_ITEMS) >= _ITEMS_KEEP:
        _ITEMS.pop(next(iter(_ITEMS)))
    _ITEMS[(run_id, name, attempt)] = (context, items, todo)


def step_task_ids(record: RunRecord, name: str) -> list[str]:
    """The ids of a step's tasks (of its current attempt), in item order."""
    run, attempt = record.steps[name], record.attempt_of(name)
    if run.items is None:
        return [task_id(record.id, name, None, attempt)]
    return [task_id(record.id, name, i, attempt) for i in range(run.items)]


def _value(record: ResultRecord | None, accept: frozenset[str]) -> Any:
    if record is None or record.state != states.SUCCESS:
        return None
    return serialization.loads(record.payload, record.content_type, accept)


def _spec(backend: ResultBackend, run_id: str) -> Pipeline:
    """A run's pipeline, read and validated once per process."""
    pipeline = _SPECS.get(run_id)
    if pipeline is None:
        pipeline = Pipeline.model_validate(load_spec(backend, run_id))
        if len(_SPECS) >= _SPECS_KEEP:
            _SPECS.pop(next(iter(_SPECS)))
        _SPECS[run_id] = pipeline
    return pipeline
