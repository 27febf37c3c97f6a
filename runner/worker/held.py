"""What the worker is started with (:class:`WorkerOptions`, from ``runner worker``'s options
and the settings) and what it holds (:class:`Held`: a message buffered or running)."""

from __future__ import annotations

from dataclasses import dataclass, field

from runner.brokers.base import Delivery
from runner.message import Message

#: messages per process that ``worker_prefetch_multiplier = 0`` ("no limit", as Celery's) may
#: hold: a bound all the same, so that one fetch stays one bounded read
NO_PREFETCH_LIMIT = 1000


@dataclass(slots=True)
class Held:
    """A message this worker holds: buffered, or running as ``job``."""

    delivery: Delivery
    message: Message
    acks_late: bool
    acked: bool = False
    job: int | None = None
    started: float = 0.0
    reject_on_worker_lost: bool = False
    checked: float = 0.0  # when it was last looked up in the revoked set (monotonic)
    seen_running: float = 0.0  # when the pool first showed it running (monotonic)


@dataclass
class WorkerOptions:
    concurrency: int = 1
    pool: str = "prefork"
    queues: list[str] = field(default_factory=lambda: ["celery"])
    hostname: str = ""
    prefetch_multiplier: int = 4
    max_tasks_per_child: int | None = None
    max_memory_per_child: int | None = None
    #: (MAX, MIN) processes for ``--autoscale`` (prefork only); ``concurrency`` is where it
    #: starts
    autoscale: tuple[int, int] | None = None
    heartbeat: bool = True  # send worker-heartbeat events (--without-heartbeat: no)
    #: -P asyncio: processes, each running ``concurrency`` tasks at once on its event loop
    #: (0: the loop runs in the worker's own process)
    processes: int = 1

    @property
    def in_flight(self) -> int:
        """Tasks the pool runs at once (``-P asyncio``: ``concurrency`` in each process)."""
        return self.concurrency * (max(1, self.processes) if self.pool == "asyncio" else 1)

    @property
    def prefetch(self) -> int:
        """Messages one process may hold: the multiplier, and 0 means no limit (as Celery's;
        in practice :data:`NO_PREFETCH_LIMIT`)."""
        return self.prefetch_multiplier if self.prefetch_multiplier > 0 else NO_PREFETCH_LIMIT
