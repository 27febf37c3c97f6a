"""The consumer: a thread that claims messages for the worker, so the main loop never blocks
on the broker and the broker never waits for the main loop.

It keeps at most ``capacity`` messages (concurrency x prefetch multiplier) in the worker's hands:
each claimed message takes a slot, given back when the worker is done with it. While the worker
still has messages to start, the consumer waits until a batch of slots is free, so a busy
worker fetches several messages per round trip; a worker with nothing to start fetches at once.
One fetch claims at most FETCH_AT_MOST messages: decoding them holds the process's GIL, and the
main loop, which hands work to the pool, must not wait behind a fetch of thousands.
When the broker has nothing, the consumer blocks in ``broker.wait`` (BLPOP on Redis, a cheap
change counter on SQLite) and wakes the main loop through a :class:`Waker` when work arrives.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from runner.brokers.base import Broker, Delivery
from runner.exceptions import ConfigError, RunnerError, SerializationError
from runner.message import Message

logger = logging.getLogger("runner.worker")

IDLE_BLOCK = 0.25  # longest one broker.wait; also how soon a stop is noticed
ERROR_PAUSE = 1.0  # seconds between attempts while the broker fails
FETCH_AT_MOST = 1000  # messages one fetch claims (-P asyncio -c 1000 holds thousands)


class Waker:
    """A self-pipe: any thread, or a signal handler, wakes a ``select`` on :meth:`fileno`."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def fileno(self) -> int:
        return self._read

    def wake(self) -> None:
        try:
            os.write(self._write, b"!")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (or closed): a wake-up is pending anyway

    def drain(self) -> None:
        try:
            while os.read(self._read, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass


@dataclass(slots=True)
class Fetched:
    """A claimed message, decoded and looked up in the revoked set by the consumer thread."""

    delivery: Delivery
    message: Message | None  # None: unreadable (see error)
    error: str | None = None
    revoked: bool = False
    exception: Exception | None = None  # why it is unreadable (a BadMessage names its id)


def decode_all(deliveries: list[Delivery], revoked: Callable[[list[str]], Any] | None = None
               ) -> list[Fetched]:
    """Decode claimed messages and mark those in the revoked set (one lookup for the batch)."""
    out = []
    for delivery in deliveries:
        try:
            out.append(Fetched(delivery, Message.decode(delivery.body)))
        except Exception as exc:  # noqa: BLE001 - any message at all must not stop a worker
            error = str(exc) if isinstance(exc, SerializationError) else (
                f"unreadable task message: {type(exc).__name__}: {exc}")
            out.append(Fetched(delivery, None, error, exception=exc))
    if revoked is not None:
        ids = revoked([f.message.id for f in out if f.message is not None])
        if ids:
            for fetched in out:
                fetched.revoked = fetched.message is not None and fetched.message.id in ids
    return out


def prepare(deliveries: list[Delivery], revoked: Callable[[list[str]], Any] | None
            ) -> list[Fetched]:
    """:func:`decode_all`, and if the revoked-set lookup fails, without it: the worker looks
    again before each task starts."""
    try:
        return decode_all(deliveries, revoked)
    except Exception as exc:  # noqa: BLE001 - the backend failed
        logger.error("consumer: looking up revoked tasks failed: %s", exc)
        return decode_all(deliveries)


class Consumer(threading.Thread):
    """Fetches into :attr:`inbox`; the worker takes from it and calls :meth:`release`."""

    def __init__(self, broker: Broker, queues: Sequence[str], consumer_id: str, capacity: int,
                 waker: Waker, revoked: Callable[[list[str]], Any] | None = None):
        super().__init__(name="runner-consumer", daemon=True)
        self.broker = broker
        self.queues = list(queues)
        self.consumer_id = consumer_id
        self.capacity = capacity
        self.batch = max(1, min(capacity, FETCH_AT_MOST) // 2)
        self.waker = waker
        self.revoked = revoked  # the backend's revoked-set lookup, done here, off the loop
        self.inbox: list[Fetched] = []
        self._free = capacity
        self._cond = threading.Condition()
        self._hungry = True  # the worker has nothing to start: fetch even a single message
        self._stopped = False
        self.fatal: ConfigError | None = None  # e.g. a wrong password: the worker must stop

    # -- called by the worker ---------------------------------------------------------------

    def take(self) -> list[Fetched]:
        with self._cond:
            taken, self.inbox = self.inbox, []
        return taken

    @contextlib.contextmanager
    def holding(self):
        """The inbox, locked: claims the worker holds but has not taken yet."""
        with self._cond:
            yield [fetched.delivery for fetched in self.inbox]

    def release(self, count: int = 1) -> None:
        """The worker is done with ``count`` messages: their slots are free again."""
        with self._cond:
            self._free += count
            self._cond.notify()

    def set_hungry(self, hungry: bool) -> None:
        with self._cond:
            if hungry != self._hungry:
                self._hungry = hungry
                self._cond.notify()

    def stop(self) -> None:
        """Stop fetching and wait for a fetch in flight; what it got stays in :attr:`inbox`."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self.join(IDLE_BLOCK + 5)

    # -- the thread -------------------------------------------------------------------------

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (
                        self._free == 0 or (self._free < self.batch and not self._hungry)):
                    self._cond.wait(IDLE_BLOCK)
                if self._stopped:
                    return
                want = min(self._free, FETCH_AT_MOST)
                self._free -= want
            got = self._fetch(want)
            prepared = prepare(got, self.revoked) if got else []
            with self._cond:
                self._free += want - len(got)
                if prepared:
                    self.inbox += prepared
            if got:
                self.waker.wake()
            if len(got) < want and not self._stopped:
                self._wait()

    def _fetch(self, want: int) -> list[Delivery]:
        try:
            return fetch(self.broker, self.queues, want, self.consumer_id)
        except ConfigError as exc:  # no retry can fix it: the worker stops with this error
            with self._cond:
                self.fatal, self._stopped = exc, True
            self.waker.wake()
            return []

    def _wait(self) -> None:
        wait(self.broker)


def fetch(broker: Broker, queues: Sequence[str], want: int, consumer: str,
          block: bool = False) -> list[Delivery]:
    """``broker.fetch`` (with ``block``: ``broker.fetch_waiting`` for up to IDLE_BLOCK); when
    it fails, log, pause and return nothing, so the caller keeps consuming. A ConfigError (e.g.
    a wrong password), which no retry can fix, is raised."""
    try:
        if block:
            return broker.fetch_waiting(queues, want, consumer, IDLE_BLOCK)
        return broker.fetch(queues, want, consumer)
    except ConfigError:
        raise
    except RunnerError as exc:
        logger.error("consumer: fetching failed: %s; retrying in %ss", exc, ERROR_PAUSE)
    except Exception:  # noqa: BLE001 - keep consuming; the worker must not go deaf
        logger.exception("consumer: fetching failed; retrying in %ss", ERROR_PAUSE)
    time.sleep(ERROR_PAUSE)
    return []


def wait(broker: Broker) -> None:
    """``broker.wait`` for up to IDLE_BLOCK; when it fails, log and pause."""
    try:
        broker.wait(IDLE_BLOCK)
    except Exception as exc:  # noqa: BLE001
        logger.error("consumer: waiting on the broker failed: %s", exc)
        time.sleep(ERROR_PAUSE)
