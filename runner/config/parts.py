"""The models settings are made of: ``broker_transport_options``, one ``task_queues`` entry,
one ``beat_schedule`` entry (see :mod:`runner.config.settings`)."""

from __future__ import annotations

import difflib
import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runner.exceptions import ConfigError
from runner.schedules import as_schedule

logger = logging.getLogger("runner.config")


class TransportOptions(BaseModel):
    """``broker_transport_options``: every option runner's brokers read is typed here; others
    pass through to a broker (one of your own may read them), and are named in a warning,
    with the option meant when one is close (:func:`unknown_transport_options`).

    Reads like a dict too (``opts['visibility_timeout']``, ``opts.get(...)``) for Celery code.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    visibility_timeout: float = Field(
        30.0, gt=0, description="seconds an unacked task stays claimed; runner renews the claim "
        "while the task runs, so it need not exceed your longest task")
    polling_interval: float = Field(
        0.005, gt=0, description="seconds between idle checks of an embedded broker")
    result_polling_interval: float = Field(
        0.001, gt=0, description="seconds between checks of an embedded result backend while "
        "AsyncResult.get() waits (only while someone waits)")
    max_retries: int | None = Field(
        None, ge=0, description="connection attempts when publishing before giving up")
    confirm_publish: bool = Field(
        False, description="RabbitMQ: each publish waits for its own confirm (about one disk "
        "write); by default confirms are read as they come and waited for before the "
        "publisher acks anything, at close and at exit, and unconfirmed messages are sent "
        "again after an outage")
    interval_start: float | None = Field(None, ge=0, description="first retry delay (seconds)")
    interval_step: float | None = Field(None, ge=0, description="delay added per retry (seconds)")
    interval_max: float | None = Field(None, ge=0, description="longest retry delay (seconds)")
    global_keyprefix: str | None = Field(
        None, description="Redis: prefix of runner's keys (default 'runner:')")
    socket_connect_timeout: float | None = Field(
        None, gt=0, description="Redis: seconds to wait for a connection (default 4)")
    wait_for_replicas: int | None = Field(
        None, ge=0, description="Redis: an enqueue (and a stored result) returns once this "
        "many replicas have it (WAIT); none lost when Sentinel promotes a replica")
    wait_for_replicas_timeout: float | None = Field(
        None, gt=0, description="Redis: seconds a WAIT may take before it is asked again "
        "(default 1)")
    master_name: str | None = Field(
        None, description="Redis Sentinel (sentinel:// URLs): the name of the master to use")
    sentinel_kwargs: dict[str, Any] | None = Field(
        None, description="Redis Sentinel: connection options for the Sentinels themselves "
        "(password, socket_timeout, ssl...)")
    health_check_interval: int | None = Field(
        None, ge=0, description="Redis: seconds between checks of an idle connection (default 25)")
    heartbeat: int | None = Field(
        None, ge=0, description="RabbitMQ: heartbeat interval in seconds (default 60; 0: none)")
    socket_timeout: float | None = Field(
        None, gt=0, description="RabbitMQ: seconds a socket operation may take (default 5)")
    blocked_connection_timeout: float | None = Field(
        None, gt=0, description="RabbitMQ: seconds a connection may stay blocked by a "
        "resource alarm before it is dropped (default 60)")

    def warn_unknown(self) -> None:
        """Log each option runner's brokers do not read (once per process): called where the
        options are handed to a broker."""
        for key, hint in unknown_transport_options(self):
            if key not in _WARNED:
                _WARNED.add(key)
                logger.warning("broker_transport_options: %r is not an option runner's brokers "
                               "read%s; it is passed to the broker as is", key,
                               f" (did you mean {hint!r}?)" if hint else "")

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)


_WARNED: set[str] = set()  # unknown transport options already named in a warning


def unknown_transport_options(options: TransportOptions) -> list[tuple[str, str | None]]:
    """``(key, the option probably meant or None)`` for each key runner's brokers do not read."""
    known = list(TransportOptions.model_fields)
    return [(key, next(iter(difflib.get_close_matches(key, known, n=1, cutoff=0.8)), None))
            for key in (options.model_extra or {})]


class QueueSpec(BaseModel):
    """One entry of ``task_queues``, whatever shape it was written in."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="queue name")
    routing_key: str | None = Field(None, description="routing key (defaults to the name)")
    max_priority: int | None = Field(None, ge=0, le=255, description="highest priority served")
    exchange: str | None = Field(None, description="AMQP exchange (kept for Celery configs)")
    exchange_type: str | None = Field(None, description="AMQP exchange type")
    queue_arguments: dict[str, Any] | None = Field(None, description="broker queue arguments")

    @model_validator(mode="before")
    @classmethod
    def _from_any(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict) or not hasattr(value, "name"):
            return value
        exchange = getattr(value, "exchange", None)  # a kombu Queue or look-alike
        arguments = getattr(value, "queue_arguments", None) or None
        return {"name": value.name, "routing_key": getattr(value, "routing_key", None) or None,
                "max_priority": getattr(value, "max_priority", None)
                or (arguments or {}).get("x-max-priority"),
                "exchange": getattr(exchange, "name", exchange) or None,
                "queue_arguments": arguments}


class BeatEntry(BaseModel):
    """One ``beat_schedule`` entry: which task, when, with what."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    task: str = Field(min_length=1, description="name of the task to send")
    schedule: Any = Field(description="seconds, a timedelta, a cron string or a schedule object")
    args: tuple[Any, ...] = Field((), description="positional arguments")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments")
    options: dict[str, Any] = Field(default_factory=dict, description="apply_async options")
    relative: bool = Field(False, description="round an interval to its resolution (Celery)")
    catchup: Literal["skip", "latest", "all"] = Field(
        "skip", description="fires missed while beat was down: skip them, run the latest "
        "once, or run all (oldest first, up to catchup_limit)")
    catchup_limit: int | None = Field(
        None, ge=1, description="most missed fires run with catchup 'all' (None: "
        "beat_catchup_limit)")

    @field_validator("schedule")
    @classmethod
    def _check_schedule(cls, value: Any) -> Any:
        if isinstance(value, bool) or value is None:
            raise ValueError(f"schedule {value!r} is not a schedule; use seconds, a timedelta, "
                             "a cron string like '*/5 * * * *' or a crontab")
        try:
            as_schedule(value)  # cron fields are parsed by croniter: ranges, steps, names
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value


def _queues_json_schema(schema: dict[str, Any]) -> None:
    """In YAML, task_queues is a list of names or queue mappings, or a mapping name -> options."""
    item = {"anyOf": [{"type": "string"}, schema.pop("items")]}
    schema.pop("type", None)
    schema["anyOf"] = [{"type": "array", "items": item},
                       {"type": "object", "additionalProperties": {"type": ["object", "null"]}}]
