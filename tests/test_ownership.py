"""Who claims, stores and acks, as decided once from the pool and the transport (see
runner.worker.ownership): the table a new engineer can read instead of thirty flag checks."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from runner.backends.memory import MemoryBackend
from runner.backends.redis import RedisBackend
from runner.backends.rpc import RPCBackend
from runner.backends.sqlite import SQLiteBackend
from runner.brokers.amqp import AMQPBroker
from runner.brokers.memory import MemoryBroker
from runner.brokers.redis import RedisBroker
from runner.brokers.sqlite import SQLiteBroker
from runner.worker.ownership import Ownership


@dataclass
class Held:
    acked: bool = False
    acks_late: bool = False


@pytest.mark.parametrize("broker, backend, consume, children_ack, main_acks_early", [
    (SQLiteBroker, SQLiteBackend, True, False, True),
    (RedisBroker, RedisBackend, True, False, True),
    (AMQPBroker, RedisBackend, True, True, False),  # deliveries belong to the child's channel
    (AMQPBroker, RPCBackend, True, True, False),  # (rpc:// results: any process replies)
    (SQLiteBroker, MemoryBackend, False, False, False),  # results in the main process only
    (MemoryBroker, MemoryBackend, False, False, False),  # one process only
])
def test_prefork_ownership_by_transport(broker, backend, consume, children_ack,
                                        main_acks_early):
    # (the classes carry the flags the decision reads: no connection is needed)
    own = Ownership.decide(True, broker, backend, defers_acks=True)
    assert (own.children_consume, own.children_ack, own.main_acks_early) == (
        consume, children_ack, main_acks_early)
    assert own.main_settles == (not children_ack)
    early, late = Held(), Held(acks_late=True)
    assert not own.ack_on_submit(early)  # (prefork batches: acked once seen running)
    assert own.owes_ack(early) == (not children_ack)
    assert own.acked_by_child_at_start(early) == children_ack
    assert not own.acked_by_child_at_start(late)
    assert not own.owes_ack(Held(acked=True))


def test_threads_pool_acks_early_messages_as_it_starts_them():
    own = Ownership.decide(False, RedisBroker, RedisBackend, defers_acks=False)
    assert not own.children_consume and not own.main_watches_starts
    assert own.ack_on_submit(Held()) and not own.ack_on_submit(Held(acks_late=True))


@pytest.mark.parametrize("broker, backend, consuming, acks, early", [
    (SQLiteBroker, SQLiteBackend, True, True, False),  # the main process acks early ones
    (AMQPBroker, RedisBackend, True, True, True),  # only the child's channel can
    (SQLiteBroker, MemoryBackend, False, False, False),  # fed: the main process stores, acks
    (RedisBroker, RPCBackend, False, True, False),  # fed, results anywhere: the child acks
])
def test_what_a_child_settles_itself(broker, backend, consuming, acks, early):
    own = Ownership.decide(True, broker, backend, defers_acks=True)
    assert own.child_acks(consuming) == acks
    assert own.child_acks_early(consuming) == early
