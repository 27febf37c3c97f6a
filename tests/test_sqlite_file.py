"""The SQLite file itself: many processes may create it at once, and a drained queue gives its
space back (the database and its WAL shrink)."""

from __future__ import annotations

import multiprocessing
import os
import threading
import traceback

from runner.backends.registry import open_backend
from runner.brokers.registry import open_broker
from runner.message import Message

_spawn = multiprocessing.get_context("fork")


def _open_at_once(url: str, barrier, errors) -> None:
    """Open the broker and the result backend of ``url`` (each in a thread of its own, as a
    worker's threads may) the moment every process is ready, and use them once."""
    def use(opened: list, open_and_use) -> None:
        try:
            opened.append(open_and_use())
        except BaseException:  # noqa: BLE001 - reported by the parent
            errors.put(traceback.format_exc())

    def broker():
        broker = open_broker(url)
        broker.enqueue([Message(id=f"m{os.getpid()}", task="tasks.add",
                                content_type="application/json", payload=b"[[1,2],{}]")])
        return broker

    def backend():
        backend = open_backend(url)
        backend.get("no-such-task")
        return backend

    barrier.wait(30)
    opened: list = []
    threads = [threading.Thread(target=use, args=(opened, f)) for f in (broker, backend)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in opened:
        store.close()


def test_processes_creating_one_new_database_at_once_all_succeed(tmp_path):
    processes_per_round, rounds = 8, 40  # on the old code: ~1 in 100 opens failed
    errors = _spawn.Queue()
    for round_ in range(rounds):
        url = f"sqlite:///{tmp_path}/round{round_}/runner.db"  # a new file (and folder) each
        barrier = _spawn.Barrier(processes_per_round)
        children = [_spawn.Process(target=_open_at_once, args=(url, barrier, errors))
                    for _ in range(processes_per_round)]
        for child in children:
            child.start()
        for child in children:
            child.join(60)
        failed = []
        while not errors.empty():
            failed.append(errors.get())
        assert failed == [], f"round {round_}:\n" + "\n".join(failed)
        assert [c.exitcode for c in children] == [0] * processes_per_round
        broker = open_broker(url)
        assert broker.qsize("celery") == processes_per_round
        broker.close()


def _sizes(path) -> tuple[int, int]:
    wal = f"{path}-wal"
    return os.path.getsize(path), (os.path.getsize(wal) if os.path.exists(wal) else 0)


def test_a_drained_queue_gives_its_space_back(tmp_path):
    path = tmp_path / "runner.db"
    broker = open_broker(f"sqlite:///{path}")
    payload = os.urandom(1024).hex().encode()  # 2 KB that do not compress
    count = 20_000
    for start in range(0, count, 1000):
        broker.enqueue([Message(id=f"m{i}", task="tasks.add", content_type="application/json",
                                payload=payload) for i in range(start, start + 1000)])
    full, _ = _sizes(path)
    assert full > 40_000_000
    drained = 0
    while True:
        deliveries = broker.fetch(["celery"], 100, "test")
        if not deliveries:
            break
        broker.ack(deliveries)
        drained += len(deliveries)
    assert drained == count
    database, wal = _sizes(path)
    assert database < 4_000_000, (full, database)  # was 40+ MB: the space is given back
    assert wal < 8_000_000, wal
    broker.close()


def test_the_wal_is_cut_back_after_a_large_transaction(tmp_path):
    path = tmp_path / "runner.db"
    broker = open_broker(f"sqlite:///{path}")
    payload = os.urandom(1024).hex().encode()
    broker.enqueue([Message(id=f"m{i}", task="tasks.add", content_type="application/json",
                            payload=payload) for i in range(5000)])  # one 20 MB transaction
    _, peak = _sizes(path)
    assert peak > 16_000_000
    for i in range(3):  # the next writes reset the (checkpointed) WAL
        broker.enqueue([Message(id=f"small{i}", task="tasks.add",
                                content_type="application/json", payload=b"[[],{}]")])
    _, wal = _sizes(path)
    assert wal <= 4 * 2**20 + 100_000, (peak, wal)
    assert broker.qsize("celery") == 5003
    broker.close()


def test_a_process_forked_while_another_thread_writes_can_write(tmp_path):
    """A worker forks pool processes while its other threads (embedded beat, the writer)
    write: the fork waits for the write to end, so the child's own connection can take the
    write lock (forked in the middle of it, the child believed it held by an inherited
    connection, and each write of its waited out the 30 s busy timeout and failed)."""
    import time

    from runner.stores.sqlite import connect, transaction

    path = str(tmp_path / "forked.db")
    schema = "CREATE TABLE IF NOT EXISTS t (x INTEGER);"
    conn = connect(path, schema)
    inside, release = threading.Event(), threading.Event()

    def write_slowly() -> None:
        with transaction(conn):
            conn.execute("INSERT INTO t VALUES (1)")
            inside.set()
            release.wait(5)

    def child(done) -> None:
        began = time.monotonic()
        own = connect(path, schema)
        with transaction(own):
            own.execute("INSERT INTO t VALUES (2)")
        done.put(time.monotonic() - began)

    writer = threading.Thread(target=write_slowly)
    writer.start()
    assert inside.wait(5)
    threading.Timer(0.5, release.set).start()  # the fork below waits for this write
    context = multiprocessing.get_context("fork")
    done = context.Queue()
    process = context.Process(target=child, args=(done,))
    process.start()
    writer.join(10)
    took = done.get(timeout=25)  # (without the guard: 30 s, then "database is locked")
    process.join(10)
    assert process.exitcode == 0 and took < 10
    assert sorted(x for (x,) in conn.execute("SELECT x FROM t")) == [1, 2]
