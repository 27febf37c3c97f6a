"""Starting pipeline runs: one run per idempotency key, at most ``max_active_runs`` at once.

``submit`` stores the run's pipeline and record, claims its key, takes a slot (or waits for
one, ``queued``), then enqueues the steps that need nothing. Every step is one atomic change of
a value in the result backend (``update_data``: a Redis transaction, an SQLite write
transaction), so two submits of one key at the same moment make one run, on every transport:

1. the record is created only where none exists with that id (a fire of beat re-sent after a
   handover has the same id: the second submit finds the first's run);
2. the key is claimed for the run id only where no run holds it; the loser deletes its
   record (never enqueued) and returns the winner's run, already stored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from runner.events import send_event
from runner.exceptions import PipelineError
from runner.pipeline import slots
from runner.pipeline.engine import Driver, resolve_params, run_context
from runner.pipeline.runs import (
    SECRET_MASK,
    RunRecord,
    StepRun,
    key_key,
    load_run,
    new_run_id,
    run_key,
    save_secrets,
    save_spec,
    secrets_key,
    spec_key,
)
from runner.pipeline.subs import store_subs
from runner.pipeline.template import RenderError, render
from runner.pipeline.validate import LoadedPipeline


@dataclass
class Submitted:
    record: RunRecord
    created: bool  # False: a run with this key (or id) existed, and is what ``record`` is


def trigger_key(pipeline: str, logical_date: datetime) -> str:
    """The key of a triggered run: one run per pipeline and logical date (UTC), whether beat
    fires it (from any beat process) or ``runner backfill`` makes it."""
    return f"{pipeline}:{logical_date.astimezone(UTC).isoformat()}"


def submit(app: Any, loaded: LoadedPipeline, params: dict[str, Any] | None = None,
           logical_date: datetime | None = None, run_id: str | None = None,
           key: str | None = None, prepare: Any = None, default_key: str | None = None
           ) -> RunRecord:
    """Start a run (or find the one with ``key``); its record."""
    return submit_run(app, loaded, params, logical_date, run_id, key, prepare,
                      default_key).record


def submit_run(app: Any, loaded: LoadedPipeline, params: dict[str, Any] | None = None,
               logical_date: datetime | None = None, run_id: str | None = None,
               key: str | None = None, prepare: Any = None, default_key: str | None = None
               ) -> Submitted:
    """Start a run of ``loaded``; with a key, only if no run has that key. The key: ``key``,
    else the pipeline's ``key:`` rendered, else ``default_key`` (a trigger's), else none (the
    run id stands for it). ``prepare(record)`` may change the new record before it is stored
    (``--from``/``--only`` mark steps done)."""
    pipeline = loaded.model
    if not app.backend.keeps_state:  # rpc://: results go to the caller and are gone once read
        raise PipelineError(
            f"pipeline {pipeline.name!r} cannot run with result_backend "
            f"{app.backend.scheme}://: a run keeps its record and the steps' results in the "
            f"result backend, which rpc:// does not keep; set result_backend to redis:// or "
            f"sqlite:///... (broker_url can stay amqp://)")
    backend = app.backend
    run_id = run_id or new_run_id()
    logical_date = logical_date or app.now()
    if logical_date.tzinfo is None:
        logical_date = logical_date.replace(tzinfo=app.tz)
    logical_date = logical_date.astimezone(app.tz)  # run.ds is the date in the app's zone
    context = run_context(run_id, pipeline.name, logical_date)
    values = resolve_params(pipeline, params or {}, context)
    if key is None and pipeline.key is not None:
        try:
            key = str(render(pipeline.key, {"run": context, "params": values}))
        except RenderError as exc:
            raise PipelineError(f"{loaded.located.where(('key',))}: key {exc}") from None
    key = key or default_key
    if key is not None:
        existing = _holder(backend, key)
        if existing is not None:
            return Submitted(existing, False)
    secrets = {name: values[name] for name, spec in pipeline.params.items()
               if spec.secret and values.get(name) is not None}
    shown = {name: SECRET_MASK if name in secrets else value for name, value in values.items()}
    record = RunRecord(id=run_id, pipeline=pipeline.name, file=loaded.path,
                       file_hash=loaded.sha256, params=shown, logical_date=logical_date,
                       app=pipeline.app, created_at=time.time(), state="queued",
                       steps={name: StepRun() for name in pipeline.steps}, key=key or run_id)
    if prepare is not None:
        prepare(record)
    save_spec(backend, run_id, pipeline.model_dump(mode="json"))
    save_secrets(backend, run_id, secrets)
    store_subs(backend, run_id, loaded)
    created: list[bool] = []

    def create(raw: bytes | None) -> bytes:
        created[:] = [raw is None]
        return raw if raw is not None else record.encode()

    backend.update_data(run_key(run_id), create)
    if not created[0]:
        return Submitted(load_run(backend, run_id), False)
    if key is not None:
        holder = _claim(backend, key, run_id)
        if holder != run_id:
            backend.delete_data(run_key(run_id))
            backend.delete_data(spec_key(run_id))
            backend.delete_data(secrets_key(run_id))
            return Submitted(load_run(backend, holder), False)
    send_event(app, "run-started", run_id=run_id, pipeline=pipeline.name,
               steps=list(pipeline.steps))
    limit = pipeline.max_active_runs
    if limit is None or slots.admit(backend, pipeline.name, run_id, limit):
        Driver(app, run_id, pipeline).begin()
    return Submitted(load_run(backend, run_id), True)


def _holder(backend: Any, key: str) -> RunRecord | None:
    raw = backend.get_data(key_key(key))
    if raw is None:
        return None
    try:
        return load_run(backend, raw.decode())
    except PipelineError:  # the winner of a race is between claiming and storing
        return None


def _claim(backend: Any, key: str, run_id: str) -> str:
    """Atomically: the run holding ``key``, or ``run_id`` where no run held it."""
    return backend.update_data(key_key(key), lambda raw: raw or run_id.encode()).decode()
