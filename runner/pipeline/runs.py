"""Run records: what a pipeline run is doing, kept in the result backend.

Keys (small values in the backend's keyed data):
- ``run:<id>``: the :class:`RunRecord` (JSON, versioned), changed atomically, once per step
  change, never per task of a mapped step;
- ``runspec:<id>``: the pipeline as submitted (so workers need not read the file);
- ``runitems:<id>:<attempt>:<step>``: the item indexes of a mapped step that have finished,
  so a fan-in fires exactly once, even when a task is delivered twice;
- ``runkey:<key>``: the run holding idempotency key ``key`` (one run per key);
- ``runslots:<pipeline>``: the runs holding and waiting for a ``max_active_runs`` slot;
- ``runreused:<id>:<attempt>:<step>``: items of a mapped step ``runner retry`` kept.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from runner import serialization
from runner.backends.base import ResultBackend
from runner.exceptions import PipelineError

RUN_VERSION = 1
STEP_DONE = frozenset({"success", "failed", "skipped", "cancelled"})
RUN_DONE = frozenset({"success", "failed", "cancelled"})
RUN_STATES = ("queued", "running", "success", "failed", "cancelled")


@dataclass
class StepRun:
    # pending, queued (ready or enqueued; no worker has started it), running, success, failed,
    # skipped, cancelled
    state: str = "pending"
    started_at: float | None = None
    ended_at: float | None = None
    items: int | None = None  # number of tasks of a mapped step; None for a single task
    done: int = 0
    failed: int = 0
    retries: int = 0
    error: str | None = None
    reason: str | None = None  # why it was skipped or cancelled
    attempt: int = 1  # which `runner retry` of the run started it (task ids depend on it)
    enqueued_at: float | None = None  # its tasks are in the broker (state stays `queued`)
    upstream_failed: bool = False  # skipped because a step it needs failed (Airflow's name)
    reused: int = 0  # items of a map kept from an earlier attempt or run (not run again)
    queue: str | None = None  # where its tasks were sent
    child: str | None = None  # the run of a sub-pipeline step (``pipeline:``)


@dataclass
class RunRecord:
    id: str
    pipeline: str
    file: str
    file_hash: str
    params: dict[str, Any]
    logical_date: datetime
    app: str | None = None
    state: str = "running"  # queued (max_active_runs), running, success, failed, cancelled
    created_at: float = 0.0
    finished_at: float | None = None
    steps: dict[str, StepRun] = field(default_factory=dict)
    attempt: int = 1  # incremented by `runner retry`
    key: str | None = None  # idempotency key: one run per key (see runner.pipeline.keys)
    reused_from: str | None = None  # the run whose results `--from`/`--only` took
    parent: dict[str, Any] | None = None  # a sub-pipeline's run: {run, step, attempt} it is
    v: int = RUN_VERSION

    def attempt_of(self, step: str) -> int:
        return self.steps[step].attempt

    def encode(self) -> bytes:
        return serialization.dumps(asdict(self), "json")[1]

    @classmethod
    def decode(cls, raw: bytes) -> RunRecord:
        data = serialization.loads(raw, "application/json")
        if data.get("v") != RUN_VERSION:
            raise PipelineError(f"run record of version {data.get('v')} is not understood "
                                f"by this runner (speaks {RUN_VERSION})")
        data["steps"] = {name: StepRun(**step) for name, step in data["steps"].items()}
        return cls(**data)


def new_run_id(when: datetime | None = None) -> str:
    """Sortable by creation time (UTC, whoever starts the run), short enough to type:
    ``20261125T084512-3fa2c1``."""
    return f"{(when or datetime.now(UTC)).astimezone(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def utc_stamp(when: datetime) -> str:
    """``when`` in UTC as run ids write it: ``20261125T084512``."""
    return f"{when.astimezone(UTC):%Y%m%dT%H%M%S}"


def run_key(run_id: str) -> str:
    return f"run:{run_id}"


SECRET_MASK = "***"  # what a run record (and so status, --json, events) holds of a secret


def secrets_key(run_id: str) -> str:
    """Where a run's ``secret: true`` params live, apart from its record (never printed)."""
    return f"run-secrets:{run_id}"


def save_secrets(backend: ResultBackend, run_id: str, secrets: dict[str, Any]) -> None:
    if secrets:
        backend.put_data(secrets_key(run_id), json.dumps(secrets).encode())


def load_secrets(backend: ResultBackend, run_id: str) -> dict[str, Any]:
    raw = backend.get_data(secrets_key(run_id))
    return json.loads(raw) if raw else {}


def spec_key(run_id: str) -> str:
    return f"runspec:{run_id}"


def items_key(run_id: str, step: str, attempt: int) -> str:
    return f"runitems:{run_id}:{attempt}:{step}"


def reused_key(run_id: str, step: str, attempt: int) -> str:
    """The item indexes of a mapped step's attempt kept from the attempt before (JSON list)."""
    return f"runreused:{run_id}:{attempt}:{step}"


def key_key(key: str) -> str:
    """Where the run id holding idempotency key ``key`` is kept."""
    return f"runkey:{key}"


def task_id(run_id: str, step: str, index: int | None, attempt: int = 1) -> str:
    """Deterministic task ids: results of a step are found without a lookup table."""
    suffix = "" if attempt == 1 else f"-a{attempt}"
    return f"{run_id}-{step}{'' if index is None else f'-{index}'}{suffix}"


def load_run(backend: ResultBackend, run_id: str) -> RunRecord:
    raw = backend.get_data(run_key(run_id))
    if raw is None:
        raise PipelineError(f"no run {run_id!r} in the result backend (see `runner runs`)")
    return RunRecord.decode(raw)


def list_runs(backend: ResultBackend) -> list[RunRecord]:
    return [RunRecord.decode(raw) for _key, raw in backend.scan_data("run:")]


def find_run(backend: ResultBackend, key: str) -> RunRecord | None:
    """The run holding idempotency key ``key``, if any."""
    run_id = backend.get_data(key_key(key))
    if run_id is None:
        return None
    raw = backend.get_data(run_key(run_id.decode()))
    return RunRecord.decode(raw) if raw is not None else None


def save_spec(backend: ResultBackend, run_id: str, spec: dict[str, Any]) -> None:
    backend.put_data(spec_key(run_id), json.dumps(spec).encode())


def load_spec(backend: ResultBackend, run_id: str) -> dict[str, Any]:
    raw = backend.get_data(spec_key(run_id))
    if raw is None:
        raise PipelineError(f"no pipeline stored for run {run_id!r}")
    return json.loads(raw)
