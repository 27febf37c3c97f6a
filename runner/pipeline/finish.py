"""The worker's side of pipeline runs: a middleware that moves a run forward when a task of one
of its steps starts (``queued`` -> ``running``) and when it reaches a final state."""

from __future__ import annotations

import json
import logging
from typing import Any

from runner import states
from runner.backends.base import ResultBackend, ResultRecord
from runner.message import (
    HEADER_ATTEMPT,
    HEADER_INDEX,
    HEADER_ITEMS,
    HEADER_RUN,
    HEADER_STEP,
    Message,
)
from runner.middleware import Middleware
from runner.pipeline.engine import Driver
from runner.pipeline.runs import items_key
from runner.pipeline.starting import HEADER_CONCURRENCY, HEADER_REUSED

logger = logging.getLogger("runner.pipeline")

_STARTED: dict[tuple[str, str, int], None] = {}  # steps this process saw start (insertion LRU)
_STARTED_KEEP = 4096


def tasks_finished(app: Any, completed: list[tuple[Message, str, ResultRecord | None]]
                   ) -> None:
    """Tasks of pipeline steps reached a final state (their results are stored).

    A single task settles its step. A mapped step's task adds its index to the step's set of
    finished items, all of one batch in one round trip; the task that completes the set
    settles the step. No run record is read per task. With ``concurrency:``, each finished
    item sends the next item waiting (the n-th item to finish sends the (N + n)-th)."""
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
        if not added:
            continue
        limit = headers.get(HEADER_CONCURRENCY)
        if limit and total is not None and done < total:
            position = limit + done - int(headers.get(HEADER_REUSED) or 0) - 1
            try:
                Driver(app, headers[HEADER_RUN]).send_item(
                    headers[HEADER_STEP], headers.get(HEADER_ATTEMPT, 1), position)
            except Exception:  # noqa: BLE001 - logged; `runner retry` sends what is missing
                logger.exception("Pipeline run %s: step %s: could not send its next item",
                                 headers[HEADER_RUN], headers[HEADER_STEP])
        if total is not None and done == total:
            _settle_mapped(app, headers, key, total, retries)


def _settle_mapped(app: Any, headers: dict, key: str, total: int, retries: int) -> None:
    driver = Driver(app, headers[HEADER_RUN])
    name, attempt = headers[HEADER_STEP], headers.get(HEADER_ATTEMPT, 1)
    failures = app.backend.get_data(f"{key}:failed")
    if failures:
        info = json.loads(failures)
        driver.settle(name, "failed", error=f"{len(info['items'])} of {total} items failed; "
                      f"first: {info['first_error']}", retries=retries, attempt=attempt,
                      items=total)
    else:
        driver.settle(name, "success", retries=retries, attempt=attempt, items=total)


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
    found = record.error_info()
    return f"{found[0]}: {' '.join(map(str, found[1]))}" if found else record.state


def tasks_starting(app: Any, messages: list[Message]) -> None:
    """A worker is about to start these messages: a step none of whose tasks this process
    started before is marked ``running`` (one update per step and process, not per task)."""
    new: dict[str, list[tuple[str, int]]] = {}
    for message in messages:
        headers = message.headers
        if not headers or HEADER_RUN not in headers:
            continue
        key = (headers[HEADER_RUN], headers[HEADER_STEP], headers.get(HEADER_ATTEMPT) or 1)
        if key in _STARTED:
            continue
        if len(_STARTED) >= _STARTED_KEEP:
            _STARTED.pop(next(iter(_STARTED)))
        _STARTED[key] = None
        new.setdefault(key[0], []).append(key[1:])
    for run_id, steps in new.items():
        try:
            Driver(app, run_id).mark_running(steps)
        except Exception:  # noqa: BLE001 - a display state only: the task runs regardless
            logger.exception("Pipeline run %s: could not mark %s running", run_id, steps)


class PipelineMiddleware(Middleware):
    """Moves a run forward when a task of one of its steps starts or reaches a final state."""

    def wants(self, message: Message) -> bool:
        return HEADER_RUN in message.headers

    def before_tasks_start(self, app: Any, messages: list[Message]) -> None:
        tasks_starting(app, messages)

    def after_task_stored(self, app: Any, message: Message, state: str,
                          record: ResultRecord | None) -> None:
        if HEADER_RUN in message.headers:
            tasks_finished(app, [(message, state, record)])

    def after_tasks_stored(self, app: Any,
                           completed: list[tuple[Message, str, ResultRecord | None]]) -> None:
        tasks_finished(app, [c for c in completed if HEADER_RUN in c[0].headers])
