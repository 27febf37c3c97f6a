"""Starting the steps of a run: a task step's messages enqueued (rate limits booked, the first
``concurrency`` items only), a sub-pipeline step's child run submitted, then the step recorded
as enqueued. Part of :class:`runner.pipeline.engine.Driver` (a mixin: it uses the driver's
``change``, ``settle``, ``context`` and ``option``)."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from runner.exceptions import PipelineError
from runner.message import (
    HEADER_ATTEMPT,
    HEADER_INDEX,
    HEADER_ITEMS,
    HEADER_RUN,
    HEADER_STEP,
    Message,
)
from runner.pipeline.model import Step
from runner.pipeline.runs import SECRET_MASK, RunRecord, reused_key, task_id
from runner.pipeline.template import RenderError, is_true, render

logger = logging.getLogger("runner.pipeline")

#: headers of a mapped step with ``concurrency:`` (how many items in flight, how many were
#: kept from an earlier attempt), read back when an item finishes to send the next one
HEADER_CONCURRENCY = "pipeline_concurrency"
HEADER_REUSED = "pipeline_reused"

_ITEMS: dict[tuple[str, str, int], tuple[dict, list, list[int]]] = {}  # rendered maps, per process
_ITEMS_KEEP = 64


class StepStarter:
    """The part of the driver that starts steps."""

    app: Any
    backend: Any
    run_id: str
    pipeline: Any

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
            if step.when is not None and not is_true(render(step.when, context)):
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
            if step.when is not None and not is_true(render(step.when, context)):
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
        self.app.broker.flush()  # in the broker before this item's message is acked

    def _booked(self, name: str, step: Step, count: int) -> list[float]:
        return _booked_slots(self, name, step, count)

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
        secrets = self.secrets()
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
                root_id=record.id, headers=headers, **options,
                **_masked_arguments(args, kwargs, secrets)))
        return out



def _masked_arguments(args: Any, kwargs: Any, secrets: dict[str, Any]) -> dict[str, str]:
    """argsrepr / kwargsrepr with the run's secret params replaced by ``***``, for what logs,
    events and inspect show of a step's task (the task itself gets the values)."""
    if not secrets:
        return {}
    shown = [repr(tuple(args or ())), repr(dict(kwargs or {}))]  # whole: a cut repr could
    for value in secrets.values():                                # keep part of a secret
        for form in {repr(value), str(value)}:
            if form:
                shown = [text.replace(form, SECRET_MASK) for text in shown]
    return {"argsrepr": shown[0][:1000], "kwargsrepr": shown[1][:1000]}


def _booked_slots(driver: Any, name: str, step: Step, count: int) -> list[float]:
    """Start times booked for ``count`` tasks of a step with ``rate_limit`` (none without)."""
    rate = driver.option(name, "rate_limit")
    if not rate or not count:
        return []
    from runner.ratelimit import book

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


