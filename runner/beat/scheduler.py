"""The beat loop: one leader at a time claims due fires atomically, then sends them.

Guarantees (all beats of an app share one result backend, and nothing else):

- *One leader.* The lease in ``beat:state`` names an owner and an expiry. The leader renews it
  every third of ``beat_lease_seconds``; a standby sleeps until the expiry it read, and takes
  the lease when it has run out, so after a leader dies a standby leads within one lease period.
  Hosts' clocks must agree to well within a lease (NTP).
- *No fire doubled.* In one atomic ``update_data`` of ``beat:state`` the leader checks that it
  holds the lease, moves each entry's cursor to now and records the fires it decided on as
  *pending*, each with a deterministic task or run id. A scheduled time is decided once, by one
  process, whatever the clocks say; a standby never sees it as due again.
- *No fire lost.* A pending fire is removed only after it is sent and written to the history.
  A leader that dies in between leaves it pending; the next leader sends it, unless the task's
  result or the run's record shows it got through (same id either way). The one window left is
  a crash after the broker took the message and before the result exists and the history is
  written: that fire is sent again with the same task id (at least once, never lost).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from runner.beat.entries import Entry
from runner.beat.policy import plan
from runner.beat.state import (
    STATE_KEY,
    BeatState,
    EntryState,
    FireRecord,
    Lease,
    PendingFire,
    fire_key,
    prune_history,
)
from runner.events import send_event
from runner.exceptions import BackendError, BrokerError, RunnerError
from runner.signals import beat_init

logger = logging.getLogger("runner.beat")

PRUNE_EVERY = 100  # fires sent between two prunings of the history (and once at start)


def new_owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Beat:
    """The scheduler of one ``runner beat`` process. ``clock`` gives epoch seconds (tests pass
    a fake one and call :meth:`tick` themselves)."""

    def __init__(self, app: Any, entries: list[Entry], *, owner: str | None = None,
                 lease_seconds: float | None = None, clock: Callable[[], float] = time.time,
                 grace: float | None = None, max_interval: float | None = None):
        self.app = app
        self.entries = {entry.name: entry for entry in entries}
        self.owner = owner or new_owner_id()
        self.lease_seconds = float(lease_seconds or app.conf.beat_lease_seconds)
        self.clock = clock
        #: fires later than this (seconds) count as missed and follow the catch-up policy
        self.grace = grace if grace is not None else max(2 * self.lease_seconds, 10.0)
        self.max_interval = max_interval or app.conf.beat_max_loop_interval
        self.leading = False
        self.history_keep = app.conf.beat_history_keep
        self._fires_since_prune = PRUNE_EVERY  # prune once when it starts leading

    # -- one step -----------------------------------------------------------------------------

    def tick(self) -> float:
        """Renew or take the lease, claim and send due fires; return seconds to the next tick."""
        now = self.clock()
        state = self._claim(now)
        self._note_leadership(state, now)
        if self.leading and state.pending:
            self._send_pending(state.pending, now)
        return self._delay(state, now)

    def _claim(self, now: float) -> BeatState:
        decided: dict[str, int] = {}

        def change(raw: bytes | None) -> bytes | None:
            decided.clear()
            state = BeatState.decode(raw)
            if not state.lease.free_for(self.owner, now):
                return raw
            state.lease = Lease(self.owner, now + self.lease_seconds)
            for name, entry in self.entries.items():
                decided[name] = self._advance(state, entry, now)
            return state.encode()

        state = BeatState.decode(self.app.backend.update_data(STATE_KEY, change))
        for name, dropped in decided.items():
            if dropped:
                logger.warning("beat: %s: dropped %s missed fire(s) (catchup %s)", name,
                               "some" if dropped < 0 else dropped, self.entries[name].catchup)
        return state

    def _advance(self, state: BeatState, entry: Entry, now: float) -> int:
        """Decide the entry's fires up to ``now``, add them to pending; return how many missed
        fires were dropped. Pure: runs inside the atomic update."""
        current = state.entries.get(entry.name)
        if current is None or current.schedule != entry.key:
            state.entries[entry.name] = EntryState(
                cursor=now, schedule=entry.key,
                last_fire=current.last_fire if current else None)
            return 0
        if now <= current.cursor:
            return 0
        decided = plan(entry, current.cursor, now, self.grace)
        for when in decided.fires:
            state.pending.append(PendingFire(entry.name, when.timestamp(),
                                             entry.fire_id(when), self.owner))
            current.last_fire = when.timestamp()
        current.cursor = now
        return decided.dropped

    def _note_leadership(self, state: BeatState, now: float) -> None:
        leading = state.lease.held_by(self.owner, now)
        if leading and not self.leading:
            logger.info("beat %s: leading (lease %gs)", self.owner, self.lease_seconds)
        elif not leading and self.leading:
            logger.warning("beat %s: lost the lease to %s; standing by", self.owner,
                           state.lease.owner)
        elif not leading and state.lease.owner and not getattr(self, "_announced", False):
            logger.info("beat %s: standing by; %s leads", self.owner, state.lease.owner)
            self._announced = True
        self.leading = leading

    # -- sending ------------------------------------------------------------------------------

    def _send_pending(self, pending: list[PendingFire], now: float) -> None:
        done: set[tuple[str, float]] = set()
        for fire in pending:
            entry = self.entries.get(fire.entry)
            if entry is None:
                logger.warning("beat: dropping pending fire of %s: no such entry any more",
                               fire.entry)
            elif not self._send(entry, fire, recovering=fire.claimed_by != self.owner):
                continue
            done.add((fire.entry, fire.scheduled))

        def remove(raw: bytes | None) -> bytes | None:
            state = BeatState.decode(raw)
            state.pending = [p for p in state.pending if (p.entry, p.scheduled) not in done]
            return state.encode()

        if done:
            self.app.backend.update_data(STATE_KEY, remove)
            self._fires_since_prune += len(done)
            if self._fires_since_prune >= PRUNE_EVERY:  # (only fires no longer pending)
                self._fires_since_prune = 0
                gone = prune_history(self.app.backend, self.history_keep)
                if gone:
                    logger.info("beat: deleted %d old fire(s) from the history (keeping %d "
                                "per entry: beat_history_keep)", gone, self.history_keep)

    def _send(self, entry: Entry, fire: PendingFire, recovering: bool) -> bool:
        """Send one fire unless it already went out; True when it needs no more attention."""
        backend = self.app.backend
        key = fire_key(fire.entry, fire.scheduled)
        if backend.get_data(key) is not None:
            return True
        scheduled = datetime.fromtimestamp(fire.scheduled, entry.tz)
        error = None
        try:
            if recovering and entry.was_sent(self.app, fire.fire_id):
                sent_id = fire.fire_id
                logger.info("beat: %s at %s had been sent (%s)", entry.name,
                            scheduled.isoformat(), sent_id)
            else:
                sent_id = entry.fire(self.app, scheduled, fire.fire_id)
                self.app.flush_broker()  # in the broker before the fire is written as sent
                logger.info("beat: fired %s for %s: %s %s", entry.name, scheduled.isoformat(),
                            "run" if entry.pipeline is not None else "task", sent_id)
                send_event(self.app, "beat-fired", entry=entry.name,
                           scheduled=scheduled.isoformat(), id=sent_id,
                           kind="run" if entry.pipeline is not None else "task")
        except Exception as exc:  # noqa: BLE001 - one bad fire must not stop the others
            if _is_transient(exc):
                logger.error("beat: sending %s for %s failed, will retry: %s", entry.name,
                             scheduled.isoformat(), exc)
                return False
            sent_id, error = fire.fire_id, f"{type(exc).__name__}: {exc}"
            logger.error("beat: %s for %s failed: %s", entry.name, scheduled.isoformat(), error)
        record = FireRecord(entry=entry.name, kind=entry.kind, scheduled=fire.scheduled,
                            sent_at=self.clock(), fire_id=sent_id, sent_by=self.owner,
                            error=error)
        backend.put_data(key, record.encode())
        return True

    # -- timing and the loop --------------------------------------------------------------------

    def _delay(self, state: BeatState, now: float) -> float:
        if not self.leading:
            until_expiry = state.lease.expires - now if state.lease.owner else 0.0
            return max(0.01, min(self.max_interval, max(until_expiry, 0.0) + 0.01))
        delay = min(self.max_interval, self.lease_seconds / 3)
        for entry in self.entries.values():
            upcoming = entry.schedule.next_after(datetime.fromtimestamp(now, entry.tz), entry.tz)
            delay = min(delay, upcoming.timestamp() - now)
        return max(0.0, delay)

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set, then give the lease up so a standby leads at once."""
        if beat_init.receivers:
            beat_init.send(sender=self)
        try:
            while not stop.is_set():
                try:
                    delay = self.tick()
                except Exception as exc:  # noqa: BLE001 - the backend may be back soon
                    logger.error("beat: tick failed: %s: %s", type(exc).__name__, exc)
                    delay = min(1.0, self.lease_seconds / 3)
                stop.wait(delay)
        finally:
            self.release()

    def release(self) -> None:
        def give_up(raw: bytes | None) -> bytes | None:
            state = BeatState.decode(raw)
            if state.lease.owner != self.owner:
                return raw
            state.lease = Lease()
            return state.encode()

        try:
            self.app.backend.update_data(STATE_KEY, give_up)
        except Exception as exc:  # noqa: BLE001 - the lease then simply expires
            logger.warning("beat: could not release the lease: %s", exc)
        if self.leading:
            logger.info("beat %s: released the lease", self.owner)
        self.leading = False


def _is_transient(exc: Exception) -> bool:
    """Broker or backend trouble (retry the fire) rather than a fire that can never work."""
    return isinstance(exc, BrokerError | BackendError) or not isinstance(exc, RunnerError)
