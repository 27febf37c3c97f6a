"""Beat's shared state, kept in the result backend: all the beats of one app share it.

Keys (small values in the backend's keyed data):

- ``beat:state``: one JSON document, :class:`BeatState`: the leader lease (owner, expiry), per
  entry the cursor (every scheduled time at or before it has been decided: fired or dropped by
  the catch-up policy) and the fires claimed but not yet confirmed sent. Lease, cursors and
  claims live in one key so that one atomic ``update_data`` checks the lease and claims fires.
- ``beat:fire:<entry>:<scheduled>``: the history, one :class:`FireRecord` per fire sent; the
  newest ``beat_history_keep`` of each entry are kept (:func:`prune_history`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

STATE_KEY = "beat:state"
FIRE_PREFIX = "beat:fire:"
STATE_VERSION = 1


@dataclass
class Lease:
    owner: str | None = None
    expires: float = 0.0

    def held_by(self, owner: str, now: float) -> bool:
        return self.owner == owner and now < self.expires

    def free_for(self, owner: str, now: float) -> bool:
        """``owner`` may take (or keep) the lease: it holds it, or nobody holds it."""
        return self.owner == owner or self.owner is None or now >= self.expires


@dataclass
class EntryState:
    cursor: float  # epoch seconds: every fire scheduled at or before it has been decided
    schedule: str  # Entry.key when the cursor was set; a change starts the timeline afresh
    last_fire: float | None = None


@dataclass
class PendingFire:
    """A fire claimed by a leader and not yet confirmed sent. Whoever leads next finishes it."""

    entry: str
    scheduled: float
    fire_id: str
    claimed_by: str


@dataclass
class BeatState:
    lease: Lease = field(default_factory=Lease)
    entries: dict[str, EntryState] = field(default_factory=dict)
    pending: list[PendingFire] = field(default_factory=list)
    v: int = STATE_VERSION

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> BeatState:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(lease=Lease(**data["lease"]),
                   entries={k: EntryState(**v) for k, v in data["entries"].items()},
                   pending=[PendingFire(**p) for p in data["pending"]], v=data["v"])


@dataclass
class FireRecord:
    """One fire in the history: what, for when, when it was sent, and the task or run id."""

    entry: str
    kind: str  # "task" or "pipeline"
    scheduled: float
    sent_at: float
    fire_id: str
    sent_by: str
    error: str | None = None  # the fire could not be sent (a pipeline refusing its params)
    v: int = STATE_VERSION

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, raw: bytes) -> FireRecord:
        return cls(**json.loads(raw))


def fire_key(entry: str, scheduled: float) -> str:
    return f"{FIRE_PREFIX}{entry}:{scheduled:017.6f}"


def read_state(backend) -> BeatState:
    return BeatState.decode(backend.get_data(STATE_KEY))


def prune_history(backend, keep: int) -> int:
    """Delete all but the newest ``keep`` fires of each entry; returns how many went."""
    by_entry: dict[str, list[str]] = {}
    for key, raw in backend.scan_data(FIRE_PREFIX):
        by_entry.setdefault(FireRecord.decode(raw).entry, []).append(key)
    gone = 0
    for keys in by_entry.values():
        keys.sort()  # (the scheduled time is zero-padded in the key: oldest first)
        for key in keys[:-keep]:
            backend.update_data(key, lambda _raw: None)
            gone += 1
    return gone


def history(backend, entry: str | None = None) -> list[FireRecord]:
    """Recorded fires, oldest first (of one entry when ``entry`` is given)."""
    prefix = FIRE_PREFIX + (f"{entry}:" if entry else "")
    records = [FireRecord.decode(raw) for _key, raw in backend.scan_data(prefix)]
    if entry:
        records = [r for r in records if r.entry == entry]
    return sorted(records, key=lambda r: (r.scheduled, r.entry))
