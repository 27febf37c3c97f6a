"""Query strings and action bodies as pydantic models: a bad one is a 400 naming the
parameter, never a 500 (a huge page size, a malformed time, an unknown state or key)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from runner.dashboard.errors import bad_request
from runner.dashboard.store import TaskQuery
from runner.events.state import PRECEDENCE
from runner.pipeline.runs import RUN_STATES

MAX_PAGE = 500  # tasks or runs in one page
#: query keys that are not filters (the live pages' fragment switch)
NOT_FILTERS = frozenset({"partial"})

TaskState = Literal[tuple(PRECEDENCE)]  # type: ignore[valid-type]
RunState = Literal[tuple(RUN_STATES)]  # type: ignore[valid-type]


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


def _when(value: str | float | None) -> float | None:
    """Epoch seconds, or an ISO 8601 date/time (UTC when it names no zone)."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        pass
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{value!r} is neither epoch seconds nor an ISO date/time") from None
    if when.tzinfo is None:
        from datetime import UTC

        when = when.replace(tzinfo=UTC)
    return when.timestamp()


class TaskFilter(_Query):
    name: str | None = Field(None, max_length=200)
    state: TaskState | None = None
    worker: str | None = Field(None, max_length=300)
    queue: str | None = Field(None, max_length=200)
    since: str | None = Field(None, description="Epoch seconds or ISO date/time.")
    until: str | None = Field(None, description="Epoch seconds or ISO date/time.")
    search: str | None = Field(None, max_length=200, description="A part of the task id.")
    limit: int = Field(50, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0, le=10_000_000)

    @field_validator("since", "until")
    @classmethod
    def _check_time(cls, value: str | None) -> str | None:
        _when(value)
        return value

    def query(self) -> TaskQuery:
        return TaskQuery(self.name, self.state, self.worker, self.queue, _when(self.since),
                         _when(self.until), self.search, self.limit, self.offset)


class RunFilter(_Query):
    pipeline: str | None = Field(None, max_length=200)
    state: RunState | None = None
    limit: int = Field(50, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0, le=10_000_000)


class PoolChange(_Query):
    n: int = Field(1, ge=1, le=1000)


class QueueName(_Query):
    queue: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:@\-]+$")


class SubmitForm(BaseModel):
    """Params of a submitted run, as text (each param's type converts it)."""

    model_config = ConfigDict(extra="forbid")
    params: dict[str, str] = Field(default_factory=dict)


def parse(model: type[BaseModel], data: Mapping[str, Any]) -> Any:
    """``data`` as ``model``; a 400 naming each bad parameter."""
    values = {k: v for k, v in data.items() if k not in NOT_FILTERS and k != "csrf"}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"]) or "query"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}")
        raise bad_request("bad parameter(s): " + "; ".join(problems)) from None
