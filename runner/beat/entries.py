"""What beat fires: entries of ``beat_schedule`` and ``triggers:`` of pipeline files.

Everything is checked when the entries are built, so a bad schedule is an error at start-up
naming the entry (a :class:`~runner.exceptions.ConfigError`), never a crash at the fire time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

from runner.exceptions import ConfigError, RunnerError
from runner.pipeline import engine
from runner.pipeline.runs import run_key, utc_stamp
from runner.pipeline.submit import trigger_key
from runner.pipeline.triggers import check_trigger, trigger_name
from runner.pipeline.validate import LoadedPipeline, load_pipeline
from runner.schedules import BaseSchedule, as_schedule, zone

CATCHUP_POLICIES = ("skip", "latest", "all")


@dataclass
class Entry:
    """One periodic thing: a task to send or a pipeline to submit, and when."""

    name: str
    schedule: BaseSchedule
    tz: tzinfo
    catchup: str = "skip"
    catchup_limit: int = 100
    task: str | None = None
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    pipeline: LoadedPipeline | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "pipeline" if self.pipeline is not None else "task"

    @property
    def key(self) -> str:
        """Changes when what or when changes: beat then starts the entry's timeline afresh."""
        what = self.pipeline.name if self.pipeline is not None else self.task
        return f"{self.kind} {what} {self.schedule.key} {self.tz}"

    def describe(self) -> str:
        what = f"pipeline {self.pipeline.path}" if self.pipeline is not None else self.task
        return f"{what} ({self.schedule.key}, {self.tz}, catchup {self.catchup})"

    def fire_id(self, scheduled: datetime) -> str:
        """The task or run id of the fire at ``scheduled``: the same in every beat process,
        so a fire re-sent after a handover keeps its id."""
        if self.pipeline is not None:
            return f"{utc_stamp(scheduled)}-{self.name}"  # UTC, as every run id
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"runner-beat:{self.name}:"
                                                  f"{scheduled.timestamp()}"))

    def was_sent(self, app: Any, fire_id: str) -> bool:
        """Whether a fire whose sending was interrupted got through after all."""
        backend = app.backend
        if self.pipeline is not None:
            return backend.get_data(run_key(fire_id)) is not None
        return backend.get(fire_id) is not None

    def fire(self, app: Any, scheduled: datetime, fire_id: str) -> str:
        """Send the task (or submit the pipeline run) for the fire at ``scheduled``."""
        logical = scheduled.astimezone(self.tz)
        if self.pipeline is not None:
            return engine.submit(app, self.pipeline, dict(self.params), logical_date=logical,
                                 run_id=fire_id,
                                 default_key=trigger_key(self.pipeline.name, scheduled)).id
        options = {**self.options, "task_id": fire_id}
        return app.send_task(self.task, self.args, self.kwargs, **options).id


def build_entries(app: Any, pipelines_dir: str | None = None) -> list[Entry]:
    """Every entry of the app's ``beat_schedule`` and of the pipeline files in
    ``pipelines_dir``; ConfigError listing each bad entry by name."""
    problems: list[str] = []
    entries: list[Entry] = []
    app_tz = app.tz if (app.conf.timezone or app.conf.enable_utc) else zone("UTC")
    known = _registered_tasks(app)
    limit = app.conf.beat_catchup_limit
    for name, spec in app.conf.beat_schedule.items():
        try:
            entries.append(_task_entry(name, spec, app_tz, known, limit))
        except RunnerError as exc:
            problems.append(f"beat_schedule entry {name!r}: {exc}")
    if pipelines_dir is not None:
        found, more = _pipeline_entries(pipelines_dir, app_tz, known, limit)
        entries += found
        problems += more
    names = [entry.name for entry in entries]
    problems += [f"entry {n!r} is defined twice" for n in sorted(set(names)) if
                 names.count(n) > 1]
    if problems:
        raise ConfigError("; ".join(problems) if len(problems) == 1 else
                          f"{len(problems)} bad beat entries:\n  - " + "\n  - ".join(problems))
    return entries


def _registered_tasks(app: Any) -> set[str] | None:
    """Task names the app registers, or None when it registers none (a producer-only app)."""
    app.import_task_modules()
    names = {name for name in app.tasks if not name.startswith("runner.")}
    return names or None


def _task_entry(name: str, spec: Any, tz: tzinfo, known: set[str] | None,
                limit: int) -> Entry:
    schedule = as_schedule(spec.schedule)
    if known is not None and spec.task not in known:
        raise ConfigError(f"unknown task {spec.task!r}; the app registers: "
                          f"{', '.join(sorted(known))}")
    return Entry(name=name, schedule=schedule, tz=schedule.tz or tz, catchup=spec.catchup,
                 catchup_limit=spec.catchup_limit or limit, task=spec.task,
                 args=tuple(spec.args), kwargs=dict(spec.kwargs), options=dict(spec.options))


def _pipeline_entries(directory: str, tz: tzinfo, known: set[str] | None,
                      limit: int) -> tuple[list[Entry], list[str]]:
    root = Path(directory)
    if not root.is_dir():
        return [], [f"--pipelines {directory}: no such directory"]
    entries, problems = [], []
    for path in sorted([*root.glob("*.yaml"), *root.glob("*.yml")]):
        try:
            loaded = load_pipeline(path)
        except RunnerError as exc:  # the message names file:line:col already
            problems.append(str(exc))
            continue
        model = loaded.model
        for index, trigger in enumerate(model.triggers):
            name = trigger_name(model, index)
            where = loaded.located.where(("triggers", index))
            try:
                schedule, trigger_tz = check_trigger(model, trigger, tz)
            except RunnerError as exc:
                problems.append(f"{where}: trigger {name!r}: {exc}")
                continue
            entries.append(Entry(name=name, schedule=schedule, tz=trigger_tz,
                                 catchup=trigger.catchup, catchup_limit=limit,
                                 pipeline=loaded, params=dict(trigger.params)))
        if model.triggers and known is not None:
            missing = sorted({s.task for s in model.steps.values() if s.task} - known)
            if missing:
                problems.append(f"pipeline {path}: unknown task(s) {', '.join(missing)}")
    return entries, problems
