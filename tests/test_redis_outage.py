"""Redis stopped and started again (AOF on, same port and folder) while a producer process and
two worker processes run: everyone reconnects with backoff and says so, nothing sent is lost,
nothing runs twice, and ``AsyncResult.get`` waits across the outage."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

pytestmark = pytest.mark.transports("redis")

PRODUCER = """
import logging, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
from tasks import record

count, marker, sent = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(sent, "a") as out:
    for i in range(count):
        result = record.delay(i, marker)  # returns once the message is in Redis
        out.write(f"{i} {result.id}\\n")
        out.flush()
        time.sleep(0.01)
"""


def test_redis_restart_while_producer_and_workers_run_loses_nothing_and_runs_nothing_twice(
        app, start_worker, redis_server, worker_env, tmp_path, wait_for_lines):
    from tasks import add

    workers = [start_worker("-c", "2", "-n", f"w{i}@test") for i in range(2)]
    marker, sent = tmp_path / "runs", tmp_path / "sent"
    (tmp_path / "producer.py").write_text(PRODUCER)
    producer = subprocess.Popen([sys.executable, "producer.py", "250", str(marker), str(sent)],
                                cwd=tmp_path, env=worker_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        wait_for_lines(sent, 60)  # the producer is well under way
        late = add.apply_async((20, 22), countdown=1.0)  # due while Redis is down

        redis_server.stop()
        outcome: dict = {}

        def wait_for_late() -> None:
            began = time.monotonic()
            try:
                outcome["value"] = late.get(timeout=30)
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                outcome["error"] = exc
            outcome["took"] = time.monotonic() - began

        getter = threading.Thread(target=wait_for_late)
        getter.start()  # get() called during the outage
        time.sleep(1.5)
        redis_server.start()  # same port, same folder: the AOF brings everything back

        getter.join(40)
        assert outcome.get("value") == 42, outcome
        assert outcome["took"] > 1.0  # it waited across the outage instead of failing
        out, err = producer.communicate(timeout=60)
        assert producer.returncode == 0, err
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.wait()

    ids = [line.split()[1] for line in sent.read_text().splitlines()]
    assert len(ids) == 250
    results = [app.AsyncResult(task_id) for task_id in ids]
    # none lost, and none stranded in a claim until the 30 s visibility timeout
    assert [r.get(timeout=10) for r in results] == [2 * i for i in range(250)]
    runs = Counter(marker.read_text().split())
    assert sorted(map(int, runs)) == list(range(250))
    assert [i for i, n in runs.items() if n > 1] == []  # none ran twice

    assert "cannot reach Redis at redis://127.0.0.1" in err and "reconnected" in err
    for worker in workers:
        log = worker.log()
        assert "cannot reach Redis at redis://127.0.0.1" in log, log
        assert "reconnected to Redis" in log
        assert "Traceback" not in log


class ReplyDroppingProxy:
    """A TCP proxy to Redis that, when armed, cuts the connection instead of relaying the next
    reply: Redis ran the command, the client never hears of it (the worst moment to fail)."""

    def __init__(self, target_port: int):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port, self.target = self.listener.getsockname()[1], target_port
        self.armed = threading.Event()
        self.dropped = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            for src, dst, replies in ((client, server, False), (server, client, True)):
                threading.Thread(target=self._pipe, args=(src, dst, replies), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            while data := src.recv(65536):
                if replies and self.armed.is_set():
                    self.armed.clear()
                    self.dropped += 1
                    break
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self.listener.close()


def test_a_reply_lost_after_redis_ran_the_script_neither_doubles_nor_strands_a_task(
        app, redis_server):
    from runner import Celery

    proxy = ReplyDroppingProxy(redis_server.port)
    url = f"redis://127.0.0.1:{proxy.port}/0"
    producer = Celery("tasks", broker=url, backend=url, set_as_current=False)
    try:
        broker = producer.broker
        producer.send_task("tasks.add", (0, 0))  # connected, script loaded
        proxy.armed.set()
        producer.send_task("tasks.add", (1, 1))  # Redis ran it; the reply is lost ...
        broker.flush()  # ... noticed where the reply is read: sent again
        assert proxy.dropped == 1
        assert broker.qsize("celery") == 2  # not enqueued twice

        assert broker.fetch(["empty"], 10, "test") == []  # script loaded
        proxy.armed.set()
        claimed = broker.fetch(["celery"], 10, "test")  # claimed, reply lost, retried
        assert proxy.dropped == 2
        assert len(claimed) == 2  # the claims of the lost reply, not nothing for 30 s
        assert broker.fetch(["celery"], 10, "test") == []
        broker.ack(claimed)
        assert broker.qsize("celery") == 0
    finally:
        producer.close()
        proxy.close()
