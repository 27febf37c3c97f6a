"""The pipeline file format, as pydantic models (``schemas/pipeline.schema.json`` comes from
here: ``python -m runner.pipeline.schema``)."""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runner.exceptions import ConfigError
from runner.schedules import crontab, parse_every, zone

TriggerRule = Literal["all_success", "all_done", "all_failed", "one_failed", "one_success",
                      "none_failed", "none_skipped"]
TRIGGER_RULES: tuple[str, ...] = get_args(TriggerRule)
ParamType = Literal["any", "str", "int", "float", "bool", "date", "datetime", "list", "dict"]
TYPE_ALIASES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool",
                "object": "dict", "array": "list"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParamSpec(_Strict):
    """A pipeline parameter; ``-p name=value`` on the command line sets it."""

    type: ParamType = Field("any", description="Type the value is checked and converted to.")
    default: Any = Field(None, description="Value when not given; may be a template such as "
                                           "'{{ run.logical_date }}'.")
    required: bool = Field(False, description="The run is refused when no value is given.")
    secret: bool = Field(False, description="Masked ('***') in the run record, runner status, "
                         "--json, logs and events; the tasks still get the value.")
    description: str | None = None

    @field_validator("type", mode="before")
    @classmethod
    def _alias(cls, value: Any) -> Any:
        return TYPE_ALIASES.get(value, value) if isinstance(value, str) else value


class StepOptions(_Strict):
    """Options of a step; ``defaults:`` sets them for every step."""

    queue: str | None = Field(None, description="Queue the step's tasks are sent to.")
    retries: int | None = Field(None, ge=0, description="Times a failed task is tried again.")
    retry_backoff: bool | float | None = Field(
        None, description="Exponential backoff between retries (true, or the first delay in s).")
    retry_delay: float | None = Field(None, ge=0, description="Seconds between retries "
                                                             "without backoff.")
    timeout: float | None = Field(None, gt=0, description="Hard time limit of each task (s).")
    soft_timeout: float | None = Field(None, gt=0, description="Soft time limit (s): raises "
                                                              "SoftTimeLimitExceeded in the task.")
    priority: int | None = Field(None, ge=0, le=9, description="0 (lowest) to 9 (highest).")
    ignore_failure: bool | None = Field(None, description="Dependents run even if this fails.")
    serializer: str | None = Field(None, description="Serializer of the task's arguments.")
    rate_limit: str | None = Field(
        None, description="At most this many of the step's tasks start per second, minute or "
                          "hour ('100/m'), across all workers, hosts and runs of the pipeline "
                          "(or of every step calling the task: rate_limit_scope).")
    rate_limit_scope: Literal["step", "task"] | None = Field(
        None, description="What shares rate_limit: 'step' (this step, in every run; default) "
                          "or 'task' (every step calling this task, in every pipeline).")

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> Any:
        if value is not None:
            from runner.ratelimit import parse_rate

            parse_rate(value)
            return str(value)
        return value


class Step(StepOptions):
    """One step: a task, called once, or once per item of ``map``."""

    task: str | None = Field(None, description="Registered task name, e.g. "
                                               "pipelines.tasks.load_sales.")
    pipeline: str | None = Field(
        None, description="Another pipeline file (relative to this one) run as this step, "
                          "instead of a task; the step's result is its final step's result "
                          "(a mapping by step name when it has several).")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Params of the sub-pipeline ('pipeline:'); templates.")
    args: list[Any] = Field(default_factory=list, description="Positional arguments; templates.")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments.")
    needs: list[str] = Field(default_factory=list, description="Steps that must finish first.")
    map: str | list[Any] | None = Field(
        None, description="A list (or a template giving one): one task per item, as {{ item }}.")
    when: str | bool | None = Field(
        None, description="Template; the step runs only when it is true, else it is skipped.")
    trigger_rule: TriggerRule | None = Field(
        None, description="When the step runs, from the states of the steps it needs (Airflow's "
                          "names): all_success (default), all_done, all_failed, one_failed, "
                          "one_success, none_failed, none_skipped.")
    concurrency: int | None = Field(
        None, ge=1, description="At most this many items of the step's map in flight at once.")
    description: str | None = None

    @field_validator("needs", mode="before")
    @classmethod
    def _one_need(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _task_or_pipeline(self) -> Step:
        if (self.task is None) == (self.pipeline is None):
            raise ValueError("a step needs exactly one of 'task' or 'pipeline'")
        if self.pipeline is not None and (self.map is not None or self.args or self.kwargs):
            raise ValueError("a sub-pipeline step ('pipeline:') takes 'params', not 'map', "
                             "'args' or 'kwargs'")
        if self.params and self.pipeline is None:
            raise ValueError("'params' is for a sub-pipeline step ('pipeline:'); a task step "
                             "takes 'args' and 'kwargs'")
        return self

    @model_validator(mode="after")
    def _concurrency_needs_map(self) -> Step:
        if self.concurrency is not None and self.map is None:
            raise ValueError("'concurrency' limits the items of a 'map' in flight; this step "
                             "has no 'map'")
        return self


def _checked(parse: Any, value: str | None) -> str | None:
    """``value`` when ``parse`` (the one beat uses) accepts it; its ConfigError as the
    ValueError pydantic reports at the value's line."""
    if value is not None:
        try:
            parse(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return value


class Trigger(_Strict):
    """When the pipeline runs by itself (``runner beat``)."""

    cron: str | None = Field(None, description="Cron expression, e.g. '0 3 * * *'.")
    every: str | None = Field(None, description="Interval, e.g. '15m', '1h', '30s'.")
    timezone: str | None = Field(None, description="IANA zone of the cron times.")
    params: dict[str, Any] = Field(default_factory=dict)
    catchup: Literal["skip", "latest", "all"] = "skip"

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return _checked(crontab.from_string, value)

    @field_validator("every")
    @classmethod
    def _every(cls, value: str | None) -> str | None:
        return _checked(parse_every, value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return _checked(zone, value)

    @model_validator(mode="after")
    def _one_kind(self) -> Trigger:
        if (self.cron is None) == (self.every is None):
            raise ValueError("a trigger needs exactly one of 'cron' or 'every'")
        return self


class Pipeline(_Strict):
    """A pipeline file."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$", description="Name of the pipeline.")
    description: str | None = None
    app: str | None = Field(None, description="Module holding the app and its tasks.")
    config: str | None = Field(None, description="Config module or YAML file for the app.")
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    defaults: StepOptions = Field(default_factory=StepOptions)
    steps: dict[str, Step] = Field(min_length=1)
    triggers: list[Trigger] = Field(default_factory=list)
    key: str | None = Field(
        None, description="Idempotency key of a run, a template of 'run' and 'params' (e.g. "
                          "'sales:{{ params.date }}'): a run whose key exists is not started "
                          "again. --key overrides it; without either, a triggered run's key is "
                          "'<pipeline>:<logical date in UTC>'.")
    max_active_runs: int | None = Field(
        None, ge=1, description="At most this many runs of the pipeline at once; further runs "
                                "wait, queued, and start in the order they were submitted.")

    @field_validator("params", mode="before")
    @classmethod
    def _bare_defaults(cls, value: Any) -> Any:
        """``limit: 1000`` is short for ``limit: {default: 1000}``."""
        if not isinstance(value, dict):
            return value
        return {name: spec if isinstance(spec, dict) and (set(spec) & set(ParamSpec.model_fields))
                else {"default": spec} for name, spec in value.items()}

    def option(self, step: Step, name: str) -> Any:
        """A step's option, falling back to the pipeline's defaults."""
        value = getattr(step, name)
        return value if value is not None else getattr(self.defaults, name)
