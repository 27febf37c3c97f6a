"""``memory://`` results: in-process, shared by backends with the same URL, for tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from runner.backends.base import ResultBackend, ResultRecord
from runner.config.urls import URL


class _Store:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.results: dict[str, tuple[ResultRecord, float | None]] = {}
        self.revoked: dict[str, tuple[bool, str]] = {}
        self.data: dict[str, bytes] = {}
        self.sets: dict[str, set[str]] = {}


_STORES: dict[str, _Store] = {}
_STORES_LOCK = threading.Lock()


class MemoryBackend(ResultBackend):
    process_local = True
    scheme = "memory"

    def __init__(self, url: URL, expires: float | None = None,
                 transport_options: dict | None = None):
        super().__init__(url, expires, transport_options)
        with _STORES_LOCK:
            self._store = _STORES.setdefault(url.raw, _Store())

    def store(self, records: Sequence[ResultRecord]) -> None:
        with self._store.cond:
            for r in records:
                expires_at = (r.date_done + self.expires) if (
                    self.expires and r.date_done) else None
                self._store.results[r.task_id] = (r, expires_at)
            self._store.cond.notify_all()

    def get(self, task_id: str) -> ResultRecord | None:
        with self._store.cond:
            found = self._store.results.get(task_id)
        if found is None or (found[1] is not None and found[1] <= time.time()):
            return None
        return found[0]

    def wait(self, task_id: str, timeout: float | None, interval: float | None = None
             ) -> ResultRecord | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._store.cond:
            while True:
                record = self.get(task_id)
                if record is not None and record.ready:
                    return record
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return record
                self._store.cond.wait(remaining)

    def forget(self, task_id: str) -> None:
        with self._store.cond:
            self._store.results.pop(task_id, None)

    def revoke(self, task_ids: Sequence[str], terminate: bool = False,
               signal: str = "SIGTERM") -> None:
        with self._store.cond:
            for task_id in task_ids:
                self._store.revoked[task_id] = (terminate, signal)

    def revoked(self, task_ids: Sequence[str]) -> dict[str, tuple[bool, str]]:
        with self._store.cond:
            return {t: self._store.revoked[t] for t in task_ids if t in self._store.revoked}

    def get_data(self, key: str) -> bytes | None:
        with self._store.cond:
            return self._store.data.get(key)

    def update_data(self, key: str, change: Callable[[bytes | None], bytes | None]
                    ) -> bytes | None:
        with self._store.cond:
            new = change(self._store.data.get(key))
            if new is None:
                self._store.data.pop(key, None)
            else:
                self._store.data[key] = new
            return new

    def add_to_set(self, key: str, member: str) -> tuple[bool, int]:
        with self._store.cond:
            members = self._store.sets.setdefault(key, set())
            added = member not in members
            members.add(member)
            return added, len(members)

    def set_size(self, key: str) -> int:
        with self._store.cond:
            return len(self._store.sets.get(key, ()))

    def chord_part_done(self, group_id: str, member: str) -> tuple[bool, int, int | None]:
        with self._store.cond:  # (re-entrant: one atomic step)
            added, count = self.add_to_set(f"chord:{group_id}", member)
            raw = self._store.data.get(f"chord-size:{group_id}")
            return added, count, int(raw) if raw else None

    def set_chord_size(self, group_id: str, chord_size: int) -> int:
        with self._store.cond:
            self._store.data[f"chord-size:{group_id}"] = str(int(chord_size)).encode()
            return len(self._store.sets.get(f"chord:{group_id}", ()))

    def forget_chord(self, group_id: str) -> None:
        with self._store.cond:
            self._store.sets.pop(f"chord:{group_id}", None)
            self._store.data.pop(f"chord-size:{group_id}", None)

    def chord_members(self, group_id: str) -> list[str]:
        with self._store.cond:
            return sorted(self._store.sets.get(f"chord:{group_id}", ()))

    def scan_data(self, prefix: str) -> list[tuple[str, bytes]]:
        with self._store.cond:
            return sorted((k, v) for k, v in self._store.data.items() if k.startswith(prefix))
