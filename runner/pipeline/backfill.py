"""``runner backfill``: one run per trigger fire in a range of dates, each with the id and key
``runner beat`` gives that fire, so a backfill never doubles a run beat made (or another
backfill), and ``max_active_runs`` holds (the runs past the limit wait, queued)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

from runner.exceptions import PipelineError, RunnerError
from runner.pipeline.runs import utc_stamp
from runner.pipeline.submit import Submitted, submit_run, trigger_key
from runner.pipeline.triggers import check_trigger, trigger_name
from runner.pipeline.validate import LoadedPipeline

MAX_FIRES = 10_000  # a range past this is refused (a typo in a year, an every: 1s)


@dataclass
class Fire:
    at: datetime  # the fire's instant, in its trigger's zone
    trigger: str  # the trigger's name, as beat names it
    params: dict[str, Any]

    @property
    def run_id(self) -> str:
        return f"{utc_stamp(self.at)}-{self.trigger}"  # as beat's fire id


def fires(loaded: LoadedPipeline, start: datetime, end: datetime, default_tz: tzinfo
          ) -> list[Fire]:
    """Every fire of the pipeline's triggers from ``start`` to ``end`` (both included), in
    time order; PipelineError when there is none, or too many."""
    model, where = loaded.model, loaded.located.where
    if not model.triggers:
        raise PipelineError(f"{loaded.path}: pipeline {model.name!r} has no triggers; "
                            f"backfill makes one run per trigger fire (for one date: "
                            f"runner submit --logical-date)")
    if end < start:
        raise PipelineError(f"backfill range is empty: --to {end.isoformat()} is before "
                            f"--from {start.isoformat()}")
    found: list[Fire] = []
    described = []
    for index, trigger in enumerate(model.triggers):
        try:
            schedule, trigger_tz = check_trigger(model, trigger, default_tz)
        except RunnerError as exc:
            raise PipelineError(f"{where(('triggers', index))}: {exc}") from None
        described.append(f"{where(('triggers', index))}: {schedule.key} ({trigger_tz})")
        current = start - timedelta(microseconds=1)
        while True:
            current = schedule.next_after(current, trigger_tz)
            if current > end:
                break
            found.append(Fire(current, trigger_name(model, index), dict(trigger.params)))
            if len(found) > MAX_FIRES:
                raise PipelineError(f"backfill of {model.name!r} from {start.isoformat()} to "
                                    f"{end.isoformat()} makes more than {MAX_FIRES:,} runs; "
                                    f"give a shorter range")
    if not found:
        raise PipelineError(f"no trigger of {model.name!r} fires from {start.isoformat()} to "
                            f"{end.isoformat()}: " + "; ".join(described))
    return sorted(found, key=lambda f: f.at)


def backfill_one(app: Any, loaded: LoadedPipeline, fire: Fire) -> Submitted:
    """The run of ``fire``: made now, or the one that exists (by id or key)."""
    return submit_run(app, loaded, fire.params, logical_date=fire.at, run_id=fire.run_id,
                      default_key=trigger_key(loaded.model.name, fire.at))
