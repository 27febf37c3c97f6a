"""Waiting for work on SQLite: on Linux a waiter sleeps until the WAL file is written (no
polling while idle); every commit of another connection must still wake it, however many
threads wait and however close together the commits come."""

from __future__ import annotations

import gc
import multiprocessing
import os
import resource
import sys
import threading

import pytest

from runner.brokers.registry import open_broker
from runner.message import Message
from runner.stores.sqlite import ChangeWatcher, connect

# Below ChangeWatcher.WATCHED_CHECK: a waiter that missed a commit's wake-up would time out.
WAKE_WITHIN = 0.8
assert WAKE_WITHIN < ChangeWatcher.WATCHED_CHECK


@pytest.fixture
def open_sqlite(tmp_path):
    opened = []

    def open_one():
        broker = open_broker(f"sqlite:///{tmp_path}/wait.db")
        opened.append(broker)
        return broker
    yield open_one
    for broker in opened:
        broker.close()


def _enqueue(broker, n: int) -> None:
    broker.enqueue([Message(id=f"m{n}", task="t", content_type="application/json",
                            payload=b"[[], {}]")])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
def test_a_waiter_sleeps_on_the_wal_file_where_the_system_can_watch_it(open_sqlite):
    consumer = open_sqlite()
    consumer.wait(0)
    assert consumer._conn.events_fd is not None and consumer._conn.events_fd >= 0


def test_each_commit_wakes_the_waiter_in_time(open_sqlite):
    consumer, producer = open_sqlite(), open_sqlite()
    consumer.wait(0)  # forget changes made so far
    for n in range(30):
        timer = threading.Timer(0.01, _enqueue, [producer, n])
        timer.start()
        assert consumer.wait(WAKE_WITHIN) is True, f"commit {n} did not wake the waiter"
        timer.join()
    assert consumer.wait(0.05) is False  # nothing new since


def test_every_thread_waiting_on_one_connection_wakes(open_sqlite):
    consumer, producer = open_sqlite(), open_sqlite()
    consumer.wait(0)
    woke: list[bool] = []
    waiters = [threading.Thread(target=lambda: woke.append(consumer.wait(WAKE_WITHIN)))
               for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    threading.Timer(0.1, _enqueue, [producer, 1]).start()
    for waiter in waiters:
        waiter.join()
    assert woke == [True, True, True]


def _produce(url: str, conn) -> None:
    """In another process: one message each time the test asks."""
    producer = open_broker(url)
    while (n := conn.recv()) is not None:
        _enqueue(producer, n)
    producer.close()


def test_each_commit_of_another_process_wakes_the_waiter(open_sqlite, tmp_path):
    """A commit writes the WAL file a moment before it shows: the waiter woken by the write
    must not go back to sleep before it sees the commit."""
    consumer = open_sqlite()
    consumer.wait(0)
    ours, theirs = multiprocessing.Pipe()
    producer = multiprocessing.get_context("fork").Process(
        target=_produce, args=(f"sqlite:///{tmp_path}/wait.db", theirs))
    producer.start()
    try:
        for n in range(200):
            ours.send(n)
            assert consumer.wait(WAKE_WITHIN) is True, f"commit {n} did not wake the waiter"
    finally:
        ours.send(None)
        producer.join(10)


def test_a_waiter_with_a_descriptor_above_1023_still_wakes(open_sqlite):
    """A process with many files open (select() cannot watch such a descriptor)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the hard limit of open files is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    ballast = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        consumer, producer = open_sqlite(), open_sqlite()
        consumer.wait(0)
        timer = threading.Timer(0.05, _enqueue, [producer, 1])
        timer.start()
        assert consumer.wait(WAKE_WITHIN) is True
        timer.join()
    finally:
        for fd in ballast:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_descriptors_of_a_connection_freed_unclosed_are_closed(tmp_path):
    """A thread's connection is freed without close(): its lock file and WAL watch must not
    stay open (inotify instances are limited per user, 128 by default)."""
    conn = connect(str(tmp_path / "freed.db"))
    conn.execute("PRAGMA data_version").fetchone()
    fds = [conn.lock_fd, conn.wal_events()]
    fds = [fd for fd in fds if fd is not None]
    del conn
    gc.collect()
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
