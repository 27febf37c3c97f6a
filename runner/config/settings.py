"""The settings model: one field per setting, Celery's lowercase names and Celery's defaults.

:class:`Settings` is what ``app.conf`` validates into. Field validators normalize the shapes
Celery users write (tuples, ``timedelta``, kombu ``Queue`` objects, a comma-separated string from
an environment variable) into one shape per setting, so the rest of runner reads one type.
``schemas/config.schema.json`` is generated from this model (``python -m runner.config.schema``).
"""

from __future__ import annotations

import difflib
import logging
import warnings
import zoneinfo
from datetime import timedelta
from functools import lru_cache
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from runner import serialization
from runner.config.parts import BeatEntry, QueueSpec, TransportOptions, _queues_json_schema
from runner.config.urls import check_url, failover_string, mask_url
from runner.exceptions import ConfigError, SerializationError
from runner.routing import validate_routes

logger = logging.getLogger("runner.config")


def _split_list(value: Any) -> Any:
    """Accept a tuple, set or comma-separated string (env vars) where a list is expected."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return value


def _allowed_serializers() -> str:
    names = serialization.registered_names()
    return ", ".join(names) + " (or their content types: " + ", ".join(
        serialization.content_type_of(name) for name in names) + ")"


def _check_serializer(value: str) -> str:
    if value not in serialization.registered_names():
        raise ValueError(f"serializer {value!r} is not registered; allowed: "
                         + ", ".join(serialization.registered_names()))
    return value


def _check_accept(value: list[str]) -> list[str]:
    unknown = []
    for item in value:
        try:
            serialization.content_type_of(item)
        except SerializationError:
            unknown.append(item)
    if unknown:
        raise ValueError(f"unknown content type(s) {', '.join(map(repr, unknown))}; allowed: "
                         + _allowed_serializers())
    return value


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _check_timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        guess = difflib.get_close_matches(value, sorted(_zones()), n=1, cutoff=0.6)
        hint = f"; did you mean {guess[0]}?" if guess else " (use an IANA name like Europe/Oslo)"
        raise ValueError(f"unknown timezone {value!r}{hint}") from None
    return value


class Settings(BaseModel):
    """Every setting runner reads. Unknown names are errors; values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True,
                              arbitrary_types_allowed=True)

    # --- broker --------------------------------------------------------------------------
    broker_url: str | None = Field(
        None, description="broker URL; None means the embedded SQLite default")
    broker_transport_options: TransportOptions = Field(
        default_factory=TransportOptions, description="options passed to the broker transport")
    broker_failover_strategy: Any = Field(
        "round-robin", description="order a failover list of broker URLs is tried in: "
        "'round-robin', 'shuffle', or a callable taking the URLs and returning an iterator")
    broker_connection_retry: bool = Field(
        True, description="retry a lost broker connection instead of failing")
    broker_connection_retry_on_startup: bool | None = Field(
        None, description="retry the first connection too (None: as broker_connection_retry)")
    broker_connection_max_retries: int | None = Field(
        100, ge=0, description="reconnection attempts before giving up; None or 0 is forever")
    broker_connection_timeout: float = Field(
        4.0, gt=0, description="seconds to wait when connecting to the broker")
    broker_pool_limit: int | None = Field(
        10, ge=0, description="broker connections kept open per process; None: no limit")

    # --- results ---------------------------------------------------------------------------
    result_backend: str | None = Field(
        None, description="result backend URL; None: follow the broker (its Redis or SQLite "
        "file; rpc:// for AMQP)")
    result_backend_transport_options: dict[str, Any] = Field(
        default_factory=dict, description="options passed to the result backend")
    result_expires: float | None = Field(
        86400.0, ge=0, description="seconds results are kept (a timedelta is accepted); "
        "None or 0: forever")
    result_serializer: str = Field("json", description="serializer for results")
    result_accept_content: list[str] | None = Field(
        None, description="content types accepted for results; None: same as accept_content")
    result_extended: bool = Field(
        False, description="store task name, args, worker and more with the result")
    result_persistent: bool | None = Field(
        None, description="keep results across broker restarts (AMQP/RPC backends)")

    # --- serialization, time -------------------------------------------------------------
    task_serializer: str = Field("json", description="serializer for task messages")
    accept_content: list[str] = Field(
        default_factory=lambda: ["json"],
        description="serializers/content types a worker accepts; others are rejected")
    timezone: str | None = Field(None, description="IANA time zone for schedules; None: UTC")

    # --- message signing (task_serializer = 'auth'; see runner.security) --------------------
    security_key: str | None = Field(
        None, description="PEM private key that signs messages (RSA, EC or Ed25519)")
    security_key_password: str | None = Field(
        None, description="password of an encrypted security_key")
    security_certificate: str | None = Field(
        None, description="PEM certificate of security_key: its fingerprint names the signer")
    security_cert_store: str | None = Field(
        None, description="certificates a worker trusts: a glob pattern, a directory or a file")
    security_digest: str = Field(
        "sha256", description="digest of RSA and EC signatures (Ed25519 has its own)")
    enable_utc: bool = Field(True, description="keep dates and times in messages in UTC")

    # --- tasks and routing -------------------------------------------------------------------
    task_default_queue: str = Field(
        "celery", min_length=1, description="queue for tasks without a route")
    task_default_queue_type: Literal["classic", "quorum"] = Field(
        "classic", description="RabbitMQ: the type of the queues runner declares; 'quorum' "
        "keeps messages when a node of a cluster goes (no priorities)")
    task_queues: list[QueueSpec] = Field(
        default_factory=list, description="queues a worker consumes (names, dicts or Queue "
        "objects); empty: the default queue", json_schema_extra=_queues_json_schema)
    task_routes: Any = Field(
        None, description="task name -> queue: a dict (glob or regex keys), a list, or a router")
    task_create_missing_queues: bool = Field(
        True, description="create a queue named in a route when it is not in task_queues")
    task_default_priority: int | None = Field(
        None, ge=0, le=9, description="priority of a task sent without one (0-9)")
    task_queue_max_priority: int | None = Field(
        None, ge=0, le=255, description="RabbitMQ: x-max-priority of the queues that set no "
        "max_priority (without one a RabbitMQ queue ignores priorities)")
    task_acks_late: bool = Field(
        False, description="acknowledge a message after the task ran, not before")
    task_acks_on_failure_or_timeout: bool = Field(
        True, description="with acks_late, acknowledge failed and timed-out tasks too")
    task_reject_on_worker_lost: bool | None = Field(
        None, description="with acks_late, requeue a task whose worker process died")
    task_delivery_limit: int | None = Field(
        20, ge=0, description="a message delivered more often than this without finishing "
        "(its task kills or stalls the process) becomes a dead letter, as RabbitMQ's "
        "x-delivery-limit; 0 or None: no limit")
    task_time_limit: float | None = Field(
        None, gt=0, description="hard time limit in seconds; the process is replaced")
    task_soft_time_limit: float | None = Field(
        None, gt=0, description="soft time limit in seconds; SoftTimeLimitExceeded is raised")
    task_default_retry_delay: float = Field(
        180, ge=0, description="seconds before a retried task runs again")
    task_max_retries: int | None = Field(
        3, ge=0, description="retries allowed by Task.retry(); None: forever")
    task_always_eager: bool = Field(
        False, description="run tasks in the caller's process instead of sending them")
    task_eager_propagates: bool = Field(
        False, description="eager tasks re-raise their exceptions in the caller")
    task_allow_error_cb_on_chord_header: bool = Field(
        False, description="a chord's link_error also goes on its header's tasks (not only "
        "on its body)")
    task_ignore_result: bool = Field(False, description="do not store task results")
    task_track_started: bool = Field(False, description="record a STARTED state")
    task_idempotency_window: float = Field(
        86400, gt=0, description="seconds during which apply_async(..., idempotency_key=K) "
        "with a K already used returns the first call's result instead of sending again")
    task_compression: Literal["gzip", "zlib", "bzip2"] | None = Field(
        None, description="compress task messages: gzip, zlib or bzip2; None: no compression")
    task_message_max_size: int | None = Field(
        16 * 2**20, ge=1, description="bytes a task's serialized arguments may take (after "
        "task_compression); a larger call raises MessageTooLarge and sends nothing. None: no "
        "limit (RabbitMQ 4 refuses messages over 16 MiB by default)")
    task_publish_retry: bool = Field(
        True, description="retry publishing a task when the broker connection fails")
    task_publish_retry_policy: dict[str, float] = Field(
        default_factory=lambda: {"max_retries": 3, "interval_start": 0, "interval_max": 1,
                                 "interval_step": 0.2},
        description="max_retries, interval_start, interval_step, interval_max for publishing")
    task_send_sent_event: bool = Field(False, description="emit a task-sent event")
    task_annotations: Any = Field(
        None, description="per-task attribute overrides, e.g. {'tasks.add': {'rate_limit': ...}}")

    # --- worker --------------------------------------------------------------------------------
    worker_concurrency: int | None = Field(
        None, ge=1, description="child processes/threads; None: one per CPU")
    worker_pool: Literal["prefork", "threads", "solo", "asyncio"] = Field(
        "prefork", description="execution pool: prefork, threads, solo or asyncio (an event "
        "loop running worker_concurrency tasks at once)")
    worker_prefetch_multiplier: int = Field(
        4, ge=0, description="messages reserved per process; 0: no limit")
    worker_max_tasks_per_child: int | None = Field(
        None, ge=1, description="replace a child after this many tasks")
    worker_max_memory_per_child: int | None = Field(
        None, ge=1, description="replace a child whose resident memory passes this (KiB)")
    worker_processes: int = Field(
        1, ge=0, description="asyncio pool: processes, each running worker_concurrency tasks "
        "at once on its event loop; 0: the loop runs in the worker's own process")
    worker_event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        "auto", description="asyncio pool: the event loop; auto: uvloop where it is installed "
        "(pip install 'runner[uvloop]'), else asyncio's own")
    worker_loop_block_threshold: float = Field(
        1.0, ge=0, description="asyncio pool: log an async task that holds the event loop "
        "longer than this (seconds; a blocking call in an async def); 0: never")
    worker_gc_threshold: int | None = Field(
        None, ge=0, description="the worker's processes collect Python's youngest garbage "
        "generation every this many allocations (Python's default: 700), after freezing what "
        "start-up made, so that short-lived task objects die between collections instead of "
        "causing long full collections; None: 10000 with the asyncio pool (thousands of "
        "coroutines in flight), Python's own settings with the others; 0: Python's own")
    worker_log_format: str = Field(
        "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s",
        description="format of the worker's log lines (logging's %-style)")
    worker_task_log_format: str = Field(
        "[%(asctime)s: %(levelname)s/%(processName)s] %(task_name)s[%(task_id)s]: "
        "%(message)s", description="format of the lines of task loggers (get_task_logger)")
    worker_hijack_root_logger: bool = Field(
        True, description="the worker configures the root logger")
    worker_send_task_events: bool = Field(
        False, description="send task events (task-received, -started, -succeeded...) for "
        "monitors; the worker's -E")
    worker_heartbeat: float = Field(
        2.0, gt=0, description="seconds between two worker-heartbeat events; a worker silent "
        "for two of them is shown offline")
    event_queue_ttl: float = Field(
        5.0, gt=0, description="seconds an event waits for its receiver before it may be "
        "dropped")
    event_queue_expires: float = Field(
        60.0, gt=0, description="seconds after which the queue of a receiver that stopped "
        "reading is deleted (RabbitMQ)")

    # --- beat, imports ----------------------------------------------------------------------
    beat_schedule: dict[str, BeatEntry] = Field(
        default_factory=dict, description="periodic tasks: name -> {task, schedule, args, "
        "kwargs, options}")
    beat_max_loop_interval: float = Field(
        300, gt=0, description="longest sleep of the beat loop, in seconds")
    beat_lease_seconds: float = Field(
        10, gt=0, description="leader lease of runner beat: a standby takes over at most this "
        "long after the leader dies")
    beat_catchup_limit: int = Field(
        100, ge=1, description="most missed fires one entry runs with catchup 'all'")
    beat_history_keep: int = Field(
        1000, ge=1, description="fires kept in each entry's history (runner beat --history); "
        "older ones are deleted")
    imports: list[str] = Field(
        default_factory=list, description="modules a worker imports to register tasks")
    include: list[str] = Field(
        default_factory=list, description="more modules to import, after imports")

    # --- validators ----------------------------------------------------------------------------
    @field_validator("broker_url", "result_backend", mode="before")
    @classmethod
    def _empty_url_is_default(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):  # Celery's failover list given as a list
            value = failover_string(value)
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str | None) -> str | None:
        return _check_url_field(value, "broker")

    @field_validator("broker_failover_strategy")
    @classmethod
    def _failover_strategy(cls, value: Any) -> Any:
        if callable(value) or value in ("round-robin", "round_robin", "shuffle"):
            return value
        raise ValueError(f"{value!r}: use 'round-robin', 'shuffle' or a callable taking the "
                         f"URLs and returning an iterator of them")

    @field_validator("result_backend")
    @classmethod
    def _check_backend_url(cls, value: str | None) -> str | None:
        return _check_url_field(value, "backend")

    @field_validator("result_expires", mode="before")
    @classmethod
    def _expires_seconds(cls, value: Any) -> Any:
        return value.total_seconds() if isinstance(value, timedelta) else value

    @field_validator("task_serializer", "result_serializer")
    @classmethod
    def _serializer(cls, value: str) -> str:
        return _check_serializer(value)

    @field_validator("accept_content", "result_accept_content", "imports", "include",
                     mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("accept_content", "result_accept_content")
    @classmethod
    def _accept(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _check_accept(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        return None if value is None else _check_timezone(value)

    @field_validator("worker_pool", mode="before")
    @classmethod
    def _pool_alias(cls, value: Any) -> Any:
        return "prefork" if value == "processes" else value

    @field_validator("task_queues", mode="before")
    @classmethod
    def _queues(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, dict):  # Celery's {name: {options}} form
            bad = [name for name, options in value.items()
                   if options is not None and not isinstance(options, dict)]
            if bad:
                raise ValueError(f"queue {bad[0]!r}: its options must be a mapping "
                                 f"({{name: {{options}}}}), not {value[bad[0]]!r}")
            return [{"name": name, **(options or {})} for name, options in value.items()]
        return _split_list(value) if isinstance(value, str | tuple | set) else value

    @field_validator("task_queues")
    @classmethod
    def _unique_queues(cls, value: list[QueueSpec]) -> list[QueueSpec]:
        names = [queue.name for queue in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"queue(s) declared twice: {', '.join(twice)}")
        return value

    @field_validator("task_routes")
    @classmethod
    def _routes(cls, value: Any) -> Any:
        problems = validate_routes(value)
        if problems:
            raise ValueError("; ".join(problems))
        return value

    @field_validator("task_soft_time_limit")
    @classmethod
    def _soft_below_hard(cls, soft: float | None, info: ValidationInfo) -> float | None:
        hard = info.data.get("task_time_limit")
        if soft is not None and hard is not None and soft >= hard:
            raise ValueError(f"must be below task_time_limit ({hard}), or the soft limit "
                             f"never fires; given {soft}")
        return soft

    @model_validator(mode="after")
    def _say_what_is_not_acted_on(self) -> Settings:
        for name, why in NOT_ACTED_ON.items():
            value = getattr(self, name)
            if value != Settings.model_fields[name].get_default(call_default_factory=True) \
                    and name not in _warned:
                _warned.add(name)
                warnings.warn(f"{name}={value!r} has no effect in runner: {why}", stacklevel=2)
        return self

    def __repr_args__(self):  # never show a password in a repr
        for name, value in super().__repr_args__():
            if name.endswith("password") and value:
                value = "********"
            yield name, mask_url(value) if name in URL_SETTINGS else value


URL_SETTINGS: tuple[str, ...] = ("broker_url", "result_backend")

#: settings runner accepts with Celery's names but does not act on, and why: one set away from
#: its default is a warning naming it (once per process), never silently ignored
NOT_ACTED_ON: dict[str, str] = {
    "broker_pool_limit": "runner keeps one connection per thread and process; there is no "
                         "pool to size",
    "result_persistent": "rpc:// results are not kept across RabbitMQ restarts; use redis:// "
                         "or sqlite:// results to keep them",
    "task_acks_on_failure_or_timeout": "with acks_late, failed and timed-out tasks are always "
                                       "acked (their FAILURE is stored)",
    "task_publish_retry": "runner always retries a publish, as the broker_connection_* "
                          "settings and the transport's max_retries say",
    "task_publish_retry_policy": "runner retries a publish as the broker_connection_* "
                                 "settings and the transport's max_retries say",
}
_warned: set[str] = set()


def _check_url_field(value: str | None, kind: str) -> str | None:
    if value is None:
        return None
    try:
        check_url(value, kind)
    except ConfigError as exc:
        raise ValueError(exc.issues[0].message) from None
    return value


SETTING_NAMES: tuple[str, ...] = tuple(Settings.model_fields)
