"""The result backend interface: where task states and return values are kept.

A record is written by the worker and read by ``AsyncResult``; the last write wins. The backend
also keeps the revoked set, because it is the one store every producer and worker already share.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runner import serialization, states
from runner.backends.celery_methods import CeleryBackendMethods
from runner.config.urls import URL


@dataclass(slots=True)
class ResultRecord:
    """What is stored for one task. ``payload`` is the serialized return value, or for the
    exception states the serialized exception description (see ``serialization``)."""

    task_id: str
    state: str
    content_type: str = "application/json"
    payload: bytes = b"null"
    traceback: str | None = None
    date_done: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # name, args, kwargs, worker, retries
    reply_to: str | None = None  # the caller's reply queue (rpc://), from Message.reply_to

    @property
    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def encode(self) -> bytes:
        """One value for stores that keep a record as bytes: a JSON head line, then the
        payload as it is."""
        head = json.dumps([self.state, self.content_type, self.traceback, self.date_done,
                           self.meta], separators=(",", ":"), default=str).encode()
        return head + b"\n" + (self.payload or b"")

    def value(self, accept: frozenset[str] | None = None) -> Any:
        """The stored value; for the exception states the exception (rebuilt from its
        description). One way to read a result, for chords, pipelines and AsyncResult."""
        value = serialization.loads(self.payload, self.content_type, accept)
        if self.state in states.EXCEPTION_STATES and isinstance(value, dict) and (
                "exc_type" in value):
            return serialization.dict_to_exception(value)
        return value

    def error_info(self, accept: frozenset[str] | None = None) -> tuple[str, list] | None:
        """(exception type name, its arguments) of a failure, without rebuilding the
        exception; None where the record holds none. One way to describe an error, for
        chords (:meth:`describe_error`) and pipelines (``Type: message``)."""
        try:
            info = serialization.loads(self.payload, self.content_type, accept)
            return str(info["exc_type"]), list(info.get("exc_message", []))
        except Exception:  # noqa: BLE001 - a description only
            return None

    def describe_error(self, accept: frozenset[str] | None = None) -> str:
        """``ValueError('boom')`` for a failure (what a chord's ChordError says); the state
        where there is no exception to describe."""
        found = self.error_info(accept)
        return f"{found[0]}({', '.join(map(repr, found[1]))})" if found else self.state

    @classmethod
    def decode(cls, task_id: str, raw: bytes) -> ResultRecord:
        head, _, payload = raw.partition(b"\n")
        state, content_type, traceback, date_done, meta = json.loads(head)
        return cls(task_id, state, content_type, payload, traceback, date_done, meta)


class ResultBackend(CeleryBackendMethods, ABC):
    """Stores results; every process opens its own instance."""

    scheme: str = ""
    #: False for a backend that only passes results on (rpc://): no keyed data, no revoked set
    keeps_state: bool = True
    #: True when producers must name their reply queue in each message (``reply_to``)
    sends_replies: bool = False
    #: results live in this process's memory: a worker's child processes cannot store them
    process_local: bool = False
    #: seconds between checks while waiting for a result (backends that can push ignore it)
    default_interval = 0.001

    def __init__(self, url: URL, expires: float | None = None,
                 transport_options: dict | None = None):
        self.url = url
        self.expires = expires
        self.transport_options = dict(transport_options or {})

    @classmethod
    def from_url(cls, url: URL, expires: float | None = None,
                 transport_options: dict | None = None, broker_url: str | None = None
                 ) -> ResultBackend:
        """Open the backend; ``broker_url`` is for backends that travel over the broker."""
        return cls(url, expires, transport_options)

    @abstractmethod
    def store(self, records: Sequence[ResultRecord]) -> None:
        """Write records in one round trip (one transaction where the store has them)."""

    def check(self) -> None:
        """Reach the store once (see ``Broker.check``); nothing where opening connects."""

    def shares_store_with(self, broker_url: URL, broker_options: Mapping | None = None) -> bool:
        """Whether the broker at ``broker_url`` (with its transport options, which name the
        Sentinel master) keeps its messages in this backend's store (one SQLite file, one Redis
        server): then the broker writes results here within its own atomic step
        (``Broker.ack_and_store``) with this backend's ``write_rows`` (SQLite) or
        ``store_commands`` (Redis). False elsewhere: the worker stores, then acks."""
        return False

    @abstractmethod
    def get(self, task_id: str) -> ResultRecord | None:
        """The record of ``task_id``, or None when there is none (PENDING) or it expired."""

    def get_many(self, task_ids: Sequence[str]) -> dict[str, ResultRecord]:
        found = {}
        for task_id in task_ids:
            record = self.get(task_id)
            if record is not None:
                found[task_id] = record
        return found

    def wait(self, task_id: str, timeout: float | None, interval: float | None = None
             ) -> ResultRecord | None:
        """Block until the task is ready and return its record; on timeout return the latest
        record (or None). Subclasses replace the polling with something that wakes on change."""
        deadline = None if timeout is None else time.monotonic() + timeout
        step = interval or self.default_interval
        while True:
            record = self.get(task_id)
            if record is not None and record.ready:
                return record
            if deadline is not None and time.monotonic() >= deadline:
                return record
            time.sleep(step)

    @abstractmethod
    def forget(self, task_id: str) -> None:
        """Delete the record: the task reads as PENDING again."""

    @abstractmethod
    def revoke(self, task_ids: Sequence[str], terminate: bool = False,
               signal: str = "SIGTERM") -> None:
        """Remember that these tasks must not run (and, with ``terminate``, must be killed)."""

    @abstractmethod
    def revoked(self, task_ids: Sequence[str]) -> dict[str, tuple[bool, str]]:
        """Which of ``task_ids`` are revoked: id -> (terminate, signal name)."""

    # -- small keyed data, for what spans tasks (chord counters, pipeline run records) --------

    @abstractmethod
    def get_data(self, key: str) -> bytes | None:
        """The value stored under ``key``, or None."""

    @abstractmethod
    def update_data(self, key: str, change: Callable[[bytes | None], bytes | None]) -> bytes | None:
        """Atomically replace the value of ``key`` by ``change(old)`` (None deletes it) and return
        the new value. ``change`` may be called more than once (optimistic stores retry on
        conflict), so it must have no side effects."""

    @abstractmethod
    def scan_data(self, prefix: str) -> list[tuple[str, bytes]]:
        """Every (key, value) whose key starts with ``prefix``, in key order."""

    def add_to_set(self, key: str, member: str) -> tuple[bool, int]:
        """Atomically add ``member`` to the set at ``key``: (whether it was new, the set's
        size). Counting what finished, once each, even when a task is delivered twice."""
        added: list[bool] = []

        def change(raw: bytes | None) -> bytes:
            members = set(raw.decode().split("\n")) if raw else set()
            added[:] = [member not in members]
            members.add(member)
            return "\n".join(sorted(members)).encode()

        raw = self.update_data(key, change)
        return added[0], len(raw.decode().split("\n"))

    def add_to_sets(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[bool, int]]:
        """:meth:`add_to_set` for many (key, member) pairs, in order, in one round trip where
        the store allows it."""
        return [self.add_to_set(key, member) for key, member in pairs]

    def set_size(self, key: str) -> int:
        """How many members the set at ``key`` has (0 when there is none)."""
        raw = self.get_data(key)
        return len(raw.decode().split("\n")) if raw else 0

    # -- chords: the finished parts of a header, as a set -------------------------------------

    def chord_part_done(self, group_id: str, member: str) -> tuple[bool, int, int | None]:
        """Add ``member`` (``"<index>:<part id>"``) to the chord's set of finished parts, in
        one atomic step with reading its size: (whether it was new, how many parts are in,
        the stored size or None where the messages carry it)."""
        added, count = self.add_to_set(f"chord:{group_id}", member)
        raw = self.get_data(f"chord-size:{group_id}")
        return added, count, int(raw) if raw else None

    def chord_parts_done(self, parts: Sequence[tuple[str, str]]
                         ) -> list[tuple[bool, int, int | None]]:
        """:meth:`chord_part_done` for many (group id, member) pairs, in order, in one round
        trip where the store allows it."""
        return [self.chord_part_done(group_id, member) for group_id, member in parts]

    def set_chord_size(self, group_id: str, chord_size: int) -> int:
        """Store the size of a chord whose header was a generator (Celery's name); returns
        how many parts had finished, read in the same atomic step."""
        self.put_data(f"chord-size:{group_id}", str(int(chord_size)).encode())
        return self.set_size(f"chord:{group_id}")

    def chord_members(self, group_id: str) -> list[str]:
        """The finished parts of a chord (``"<index>:<part id>"``)."""
        raw = self.get_data(f"chord:{group_id}")
        return raw.decode().split("\n") if raw else []

    def forget_chord(self, group_id: str) -> None:
        """Delete a finished chord's parts and size (its "body sent" mark stays, so a part
        delivered again meanwhile sends nothing)."""
        self.delete_data(f"chord:{group_id}")
        self.delete_data(f"chord-size:{group_id}")

    def chord_body_sent(self, group_id: str) -> bool:
        return self.set_size(f"chord-sent:{group_id}") > 0

    def mark_chord_body_sent(self, group_id: str) -> None:
        self.add_to_set(f"chord-sent:{group_id}", "1")

    def put_data(self, key: str, value: bytes) -> None:
        self.update_data(key, lambda _old: value)

    def delete_data(self, key: str) -> None:
        self.update_data(key, lambda _old: None)

    def cleanup(self) -> int:
        """Delete expired records; return how many."""
        return 0

    def close(self) -> None:
        """Release connections."""
