"""Who claims, stores and acks a message: decided once, at start-up, from the pool and the
transport, and asked by the worker's main loop and by the prefork children alike (instead of
each combining the broker's, the backend's and the pool's flags on its own).

- **Children consume** where the pool forks processes and both broker and results can be
  opened by any process (not ``memory://``, not ``rpc://``): each child claims, runs, stores
  and settles its batches; the main process only watches (see :mod:`runner.worker.child`).
  Otherwise the main process's consumer thread claims and the pool is fed.
- **Children ack** where they consume from a broker whose deliveries only the fetching
  connection can settle (RabbitMQ): a child acks its own messages, early-ack ones just before
  they start, and what a dead child held unacked comes back by itself; the main process never
  acks, requeues or buries those.
- Elsewhere the **main process acks** early-ack messages: as it hands them to a pool that starts
  them at once, or, where the pool may hold them in a batch first (prefork), once it sees them
  running. Results are stored (and late acks made) by whoever runs the job where the results
  can be written from any process, else by the main process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class _Held(Protocol):
    acked: bool
    acks_late: bool


@dataclass(frozen=True, slots=True)
class Ownership:
    children_consume: bool
    children_ack: bool
    #: any connection may ack a claim (not RabbitMQ, whose deliveries belong to a channel)
    acks_anywhere: bool
    #: the pool may hold a submitted job before it starts (prefork batches)
    defers_acks: bool
    #: the pool's processes store results (the backend is not rpc://)
    children_store: bool

    @classmethod
    def decide(cls, forks: bool, broker, backend, defers_acks: bool) -> Ownership:
        """From the pool (``forks``: prefork; ``defers_acks``: its batches) and the
        transport."""
        consume = forks and not broker.process_local and not backend.process_local
        return cls(children_consume=consume,
                   children_ack=consume and not broker.acks_anywhere,
                   acks_anywhere=broker.acks_anywhere, defers_acks=defers_acks,
                   children_store=not backend.process_local)

    # -- the main process ---------------------------------------------------------------------

    @property
    def main_acks_early(self) -> bool:
        """The main process acks the early-ack messages consuming children run."""
        return self.children_consume and not self.children_ack

    @property
    def main_watches_starts(self) -> bool:
        """The main process looks at what runs to make early acks (prefork, not AMQP's)."""
        return self.defers_acks and not self.children_ack

    def ack_on_submit(self, held: _Held) -> bool:
        """Ack ``held`` as it is handed to the pool (early ack, and the pool starts it now)."""
        return not held.acks_late and not self.defers_acks

    def owes_ack(self, held: _Held) -> bool:
        """The main process still acks ``held`` once its job is over (lost, timed out,
        revoked, or stored here)."""
        return not held.acked and not self.children_ack

    def owes_ack_after_child(self, held: _Held) -> bool:
        """...for a job a child settled: only where the child could not ack it itself."""
        return not held.acked and not self.acks_anywhere and not self.children_ack

    def acked_by_child_at_start(self, held: _Held) -> bool:
        """A child that acks its own acked ``held`` just before it started."""
        return self.children_ack and not held.acks_late

    @property
    def main_settles(self) -> bool:
        """The main process acks, requeues and buries the unacked messages it holds (else,
        held by a child that acks its own, they come back when its connection closes)."""
        return not self.children_ack

    # -- a prefork child ----------------------------------------------------------------------

    def child_acks(self, consuming: bool) -> bool:
        """A child acks what it settled: where it stores results, and it consumed the
        messages or any connection may ack them."""
        return self.children_store and (consuming or self.acks_anywhere)

    def child_acks_early(self, consuming: bool) -> bool:
        """A consuming child acks early-ack messages itself, just before they start."""
        return consuming and not self.acks_anywhere
