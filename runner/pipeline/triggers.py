"""What a pipeline's ``triggers:`` must pass before beat schedules them, in one place: beat
calls it at start-up and ``runner validate`` calls it, so a file that validates is one beat
accepts."""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

from runner.exceptions import RunnerError
from runner.pipeline import engine
from runner.pipeline.model import Pipeline, Trigger
from runner.pipeline.validate import LoadedPipeline
from runner.schedules import as_schedule, parse_every, zone


def check_trigger(model: Pipeline, trigger: Trigger, default_tz: tzinfo) -> tuple[Any, tzinfo]:
    """The trigger's schedule and zone; RunnerError when its schedule or its params are not
    what a run accepts (params are resolved as a run would resolve them)."""
    trigger_tz = zone(trigger.timezone) if trigger.timezone else default_tz
    schedule = parse_every(trigger.every) if trigger.every else as_schedule(trigger.cron)
    engine.resolve_params(model, dict(trigger.params),
                          engine.run_context("check", model.name, datetime.now(trigger_tz)))
    return schedule, trigger_tz


def trigger_name(model: Pipeline, index: int) -> str:
    return model.name if len(model.triggers) == 1 else f"{model.name}[{index}]"


def trigger_problems(loaded: LoadedPipeline, default_tz: tzinfo) -> list[str]:
    """``file:line:col: trigger 'name': what`` for each trigger beat would refuse."""
    problems = []
    for index, trigger in enumerate(loaded.model.triggers):
        try:
            check_trigger(loaded.model, trigger, default_tz)
        except RunnerError as exc:
            problems.append(f"{loaded.located.where(('triggers', index))}: trigger "
                            f"{trigger_name(loaded.model, index)!r}: {exc}")
    return problems
