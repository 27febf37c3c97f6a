"""Bad input never stops a worker: malformed messages, pushed through the broker's own enqueue
beside good tasks, become dead letters (with a FAILURE where their id can be read); a task that
kills its process every time is buried after ``task_delivery_limit`` deliveries; the worker's
main process never dies and never loops."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
import uuid

import pytest

from runner.exceptions import RunnerError
from tests.helpers import wait_for_state

pytestmark = pytest.mark.transports("sqlite", "redis", "amqp")


class Raw:
    """A message as a buggy producer or an attacker puts it in the broker: any bytes."""

    def __init__(self, body: bytes, task_id: str | None = None, queue: str = "celery"):
        self.id = task_id or uuid.uuid4().hex
        self.queue, self.priority, self.eta, self.body = queue, None, None, body

    def encode(self) -> bytes:
        return self.body


def envelope(task_id: str, payload: bytes = b"[[1,2],{}]", **changes) -> bytes:
    """A good envelope of ``tasks.add`` with ``changes`` (a value of ``...``: the key left out)."""
    head = {"id": task_id, "task": "tasks.add", "content_type": "application/json",
            "queue": "celery", "priority": None, "eta": None, "expires": None, "retries": 0,
            "root_id": None, "parent_id": None, "group_id": None, "headers": {},
            "options": {}, "sent_at": time.time(), "v": 1}
    head.update(changes)
    head = {k: v for k, v in head.items() if v is not ...}
    return json.dumps(head).encode() + b"\n" + payload


# label -> (body for a task id, whether the id can be read, what the reason says)
BAD = {
    "task is a list": (lambda i: envelope(i, task=["tasks.add"]), True, "task must be"),
    "options is a list": (lambda i: envelope(i, options=[1]), True, "options must be"),
    "payload an object": (lambda i: envelope(i, b'{"a":1}'), True, "[args, kwargs]"),
    "payload a number": (lambda i: envelope(i, b"5"), True, "[args, kwargs]"),
    "payload null": (lambda i: envelope(i, b"null"), True, "[args, kwargs]"),
    "payload three items": (lambda i: envelope(i, b"[1,2,3]"), True, "[args, kwargs]"),
    "negative soft limit": (lambda i: envelope(i, options={"soft_time_limit": -5}), True,
                            "soft_time_limit"),
    "time limit a string": (lambda i: envelope(i, options={"time_limit": "abc"}), True,
                            "time_limit"),
    "expires a string": (lambda i: envelope(i, expires="never"), True, "expires"),
    "eta a string": (lambda i: envelope(i, eta="tomorrow"), True, "eta"),
    "priority a string": (lambda i: envelope(i, priority="high"), True, "priority"),
    "retries a string": (lambda i: envelope(i, retries="many"), True, "retries"),
    "queue a number": (lambda i: envelope(i, queue=123), True, "queue"),
    "group id a list": (lambda i: envelope(i, group_id=[1]), True, "group_id"),
    "acks_late maybe": (lambda i: envelope(i, options={"acks_late": "maybe"}), True,
                        "acks_late"),
    "pipeline run a number": (lambda i: envelope(i, headers={"pipeline_run": 5,
                                                              "pipeline_step": "s"}),
                              True, "pipeline_run"),
    "unknown result serializer": (lambda i: envelope(i, options={"result_serializer":
                                                                 "pickle9"}), True, "pickle9"),
    "time limit 1e308": (lambda i: envelope(i, options={"time_limit": 1e308}), True,
                         "time_limit"),
    "eta in year 10^300": (lambda i: envelope(i, eta=1e300), True, "eta"),
    "link not a signature": (lambda i: envelope(i, options={"link": [{"task": "tasks.add",
                                                                      "args": "notalist"}]}),
                             True, "options.link[0]"),
    "chord body without its parts": (lambda i: envelope(i, options={
        "chord": {"body": {"task": "tasks.add"}, "size": 1}, "group_index": 0}),
        True, "options.chord.body"),
    "protocol v2": (lambda i: envelope(i, v=2), True, "protocol v2"),
    "unknown task": (lambda i: envelope(i, task="tasks.nope"), True, "tasks.nope"),
    "content type not accepted": (lambda i: envelope(i, content_type="application/x-evil"),
                                  True, "application/x-evil"),
    "no id": (lambda i: envelope(i, id=...), False, "id must be"),
    "null envelope": (lambda i: b"null\n" + i.encode(), False, "JSON object expected"),
    "garbage bytes": (lambda i: b"\x00\xff\xfe garbage " + i.encode(), False, "envelope"),
    "truncated JSON": (lambda i: envelope(i)[:40] + b"\n" + i.encode(), False, "envelope"),
    "not UTF-8": (lambda i: b'{"id": "\xff\xfe' + i.encode() + b'"}\n[]', False, "envelope"),
    "nesting 100,000 deep": (lambda i: b"[" * 100_000 + i.encode() + b"\n", False, "envelope"),
}


def push_bad(app, kinds: list[str], count: int) -> dict[str, tuple[str, str, str]]:
    """Enqueue ``count`` malformed messages, cycling through ``kinds``; returns
    task id -> (kind, whether the id is readable, the reason's words)."""
    pushed = {}
    messages = []
    for n, kind in zip(range(count), itertools.cycle(kinds), strict=False):
        task_id = f"bad-{n}-{uuid.uuid4().hex[:8]}"
        make, readable, words = BAD[kind]
        messages.append(Raw(make(task_id), task_id))
        pushed[task_id] = (kind, readable, words)
    for start in range(0, len(messages), 200):
        app.broker.enqueue(messages[start:start + 200])
    app.broker.flush()
    return pushed


def wait_for_dead_letters(app, count: int, timeout: float = 90) -> list:
    deadline = time.monotonic() + timeout
    while app.broker.dead_letter_count() < count:
        assert time.monotonic() < deadline, (
            f"{app.broker.dead_letter_count()} dead letters, not {count}")
        time.sleep(0.2)
    return app.broker.dead_letters(limit=count + 100)


def test_malformed_messages_among_good_ones_become_dead_letters(app, start_worker):
    """1,000 malformed messages of every kind among 1,000 good tasks: every good task
    completes once, every bad one is a dead letter with its reason (and a FAILURE where its
    id is readable), no message is delivered twice, and the worker never restarts."""
    goods = [app.tasks["tasks.add"].delay(i, i) for i in range(500)]
    bad = push_bad(app, list(BAD), 1000)
    goods += [app.tasks["tasks.add"].delay(i, i) for i in range(500, 1000)]
    forward = Raw(envelope("from-a-newer-producer", trace_context={"span": 1}),
                  "from-a-newer-producer")
    app.broker.enqueue([forward])
    app.broker.flush()
    worker = start_worker("-c", "2")
    main_pid = worker.pid

    assert [r.get(timeout=60) for r in goods] == [i + i for i in range(1000)]
    letters = {d.key: d for d in wait_for_dead_letters(app, len(bad))}
    assert app.AsyncResult("from-a-newer-producer").get(timeout=10) == 3  # unknown field: runs

    assert len(letters) == len(bad)
    by_id = {d.task_id: d for d in letters.values() if d.task_id}
    unreadable = [d for d in letters.values() if not d.task_id]
    for task_id, (kind, readable, words) in bad.items():
        if not readable:
            continue
        letter = by_id[task_id]
        assert words in letter.reason, (kind, letter.reason)
        assert letter.deliveries == 1 and letter.queue == "celery"
        result = app.AsyncResult(task_id)
        assert result.state == "FAILURE", kind
        assert words in str(result.result), (kind, result.result)
    assert len(unreadable) == sum(not readable for _, readable, _ in bad.values())
    assert all(d.body and d.reason for d in unreadable)

    assert worker.proc.poll() is None and worker.pid == main_pid
    log = worker.log()
    assert "exited with" not in log and "delivering it again" not in log
    assert "Traceback" not in log


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_malformed_messages_in_a_thread_or_solo_pool_become_dead_letters(app, start_worker,
                                                                         pool):
    """The same with the threads and solo pools, where the worker's consumer thread claims
    for them (a bad message must not kill a pool thread, nor the solo worker)."""
    goods = [app.tasks["tasks.add"].delay(i, 1) for i in range(100)]
    bad = push_bad(app, list(BAD), 2 * len(BAD))
    worker = start_worker("-P", pool, "-c", "4")
    assert [r.get(timeout=30) for r in goods] == [i + 1 for i in range(100)]
    letters = wait_for_dead_letters(app, len(bad))
    assert len(letters) == len(bad)
    readable = [i for i, (_, ok, _) in bad.items() if ok]
    for task_id in readable:  # (a dead letter is kept before its FAILURE is stored)
        wait_for_state(app.AsyncResult(task_id), "FAILURE", timeout=30)
    assert worker.proc.poll() is None and "Traceback" not in worker.log()


def test_a_task_that_kills_its_process_every_time_is_buried_at_the_delivery_limit(
        app, start_worker, tmp_path, transport):
    """acks_late + reject_on_worker_lost: the message comes back after each death; past
    ``task_delivery_limit`` it is a dead letter and get() raises, instead of a loop."""
    marker = tmp_path / "runs"
    result = app.tasks["tasks.die_every_time"].delay(str(marker))
    good = app.tasks["tasks.add"].delay(2, 3)
    worker = start_worker("-c", "1", env={"RUNNER_TASK_DELIVERY_LIMIT": "3"})
    with pytest.raises(RunnerError, match=r"delivered 4 times without finishing"):
        result.get(timeout=60)
    assert good.get(timeout=10) == 5
    assert len(marker.read_text().split()) == 3  # ran 3 times, never a 4th
    (letter,) = app.broker.dead_letters()
    assert letter.task_id == result.id and letter.deliveries == 4
    assert "task_delivery_limit=3" in letter.reason
    assert worker.proc.poll() is None


def test_a_message_whose_handling_fails_is_buried_and_the_worker_goes_on(app, start_worker):
    """A Task class whose options raise when the worker looks at them: that message alone is a
    dead letter (its id in the log), the tasks around it run."""
    before = app.tasks["tasks.add"].delay(1, 1)
    broken = app.tasks["tasks.broken_options"].delay()
    after = app.tasks["tasks.add"].delay(2, 2)
    worker = start_worker("-c", "1")
    assert (before.get(timeout=15), after.get(timeout=15)) == (2, 4)
    with pytest.raises(RuntimeError, match="acks_late cannot be read"):
        broken.get(timeout=15)
    assert [d.task_id for d in app.broker.dead_letters()] == [broken.id]
    assert broken.id in worker.log() and worker.proc.poll() is None


def test_dead_letters_cli_lists_shows_requeues_and_purges(app, start_worker, worker_env,
                                                          tmp_path):
    """An unknown task is buried; once the code is there, `requeue` runs it; `purge` drops the
    rest; `--json` and `count` give what monitoring reads."""
    pushed = push_bad(app, ["unknown task", "garbage bytes"], 2)
    unknown_id = next(i for i, (kind, _, _) in pushed.items() if kind == "unknown task")
    worker = start_worker("-c", "1")
    wait_for_dead_letters(app, 2)
    worker.stop()

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "runner", *args, "-A", "tasks"],
                              cwd=tmp_path, env=worker_env, capture_output=True, text=True,
                              timeout=60)

    listed = cli("dead-letters", "list")
    assert listed.returncode == 0 and listed.stdout.startswith("2 dead letters"), listed
    assert unknown_id in listed.stdout and "tasks.nope" in listed.stdout
    data = json.loads(cli("dead-letters", "list", "--json").stdout)
    assert data["count"] == 2 and {d["reason"] for d in data["dead_letters"]}
    assert cli("dead-letters", "count").stdout.strip() == "2"
    shown = cli("dead-letters", "show", unknown_id)
    assert "tasks.nope" in shown.stdout and "reason:" in shown.stdout
    missing = cli("dead-letters", "show", "no-such-key")
    assert missing.returncode == 2 and "no dead letter 'no-such-key'" in missing.stderr

    # requeued (as after deploying the missing task): the message is back in its queue
    garbage_key = next(d.key for d in app.broker.dead_letters() if d.task_id is None)
    requeued = cli("dead-letters", "requeue", unknown_id, garbage_key)
    assert requeued.returncode == 1  # the garbage is still garbage
    assert "Requeued 1 dead letter." in requeued.stdout
    assert f"{garbage_key}: still unreadable" in requeued.stderr
    assert app.AsyncResult(unknown_id).state == "PENDING"  # its FAILURE is forgotten
    assert app.broker.qsize("celery") == 1

    purged = cli("dead-letters", "purge", "--all", "-f")
    assert purged.stdout.strip() == "Purged 1 dead letter."
    assert cli("dead-letters", "count").stdout.strip() == "0"


@pytest.mark.transports("amqp")
def test_bad_messages_and_the_delivery_limit_with_rpc_results(app, start_worker, tmp_path):
    """With ``rpc://`` results the worker's main process consumes: a bad message's FAILURE
    still reaches its caller, and redeliveries are counted by the worker (no store)."""
    app.conf.update(result_backend="rpc://")
    good = app.tasks["tasks.add"].delay(1, 1)
    reply_to = app._reply_to()
    app.broker.enqueue([Raw(envelope("bad-rpc", b'{"a":1}', reply_to=reply_to), "bad-rpc"),
                        Raw(envelope("bad-rpc-2", priority="high", reply_to=reply_to),
                            "bad-rpc-2")])
    poison = app.tasks["tasks.die_every_time"].delay(str(tmp_path / "runs"))
    start_worker("-c", "1", env={"RUNNER_RESULT_BACKEND": "rpc://",
                                 "RUNNER_TASK_DELIVERY_LIMIT": "2"})
    assert good.get(timeout=20) == 2
    with pytest.raises(RunnerError, match=r"\[args, kwargs\]"):
        app.AsyncResult("bad-rpc").get(timeout=20)
    with pytest.raises(RunnerError, match="priority"):
        app.AsyncResult("bad-rpc-2").get(timeout=20)
    with pytest.raises(RunnerError, match="delivered 3 times"):
        poison.get(timeout=40)
    assert len((tmp_path / "runs").read_text().split()) == 2
    assert {d.key for d in app.broker.dead_letters()} == {"bad-rpc", "bad-rpc-2", poison.id}


def test_requeued_dead_letter_runs_and_its_new_result_stays(app, start_worker, worker_env,
                                                             tmp_path):
    """`requeue` forgets the FAILURE before it sends: the new run's result is not wiped."""
    from runner.dead_letters import DeadLetter
    from runner.message import Message

    start_worker("-c", "1")
    messages = [Message(id=f"rq-{i}", task="tasks.add", content_type="application/json",
                        payload=b"[[1,2],{}]") for i in range(5)]
    app.broker.bury([DeadLetter.of(m.encode(), "test", "celery", task_id=m.id, task=m.task)
                     for m in messages])
    run = subprocess.run([sys.executable, "-m", "runner", "dead-letters", "requeue",
                          *[m.id for m in messages], "-A", "tasks"], cwd=tmp_path,
                         env=worker_env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "Requeued 5 dead letters." in run.stdout, run.stderr
    assert [app.AsyncResult(m.id).get(timeout=15) for m in messages] == [3] * 5
    time.sleep(0.5)
    assert {app.AsyncResult(m.id).state for m in messages} == {"SUCCESS"}
    assert app.broker.dead_letter_count() == 0


def test_a_bad_message_with_a_finished_tasks_id_keeps_that_result(app, start_worker):
    good = app.tasks["tasks.add"].delay(20, 22)
    worker = start_worker("-c", "1")
    assert good.get(timeout=10) == 42
    app.broker.enqueue([Raw(envelope(good.id, b'{"a":1}'), good.id)])
    app.broker.flush()
    wait_for_dead_letters(app, 1)
    assert app.AsyncResult(good.id).get(timeout=5) == 42
    assert worker.proc.poll() is None


@pytest.mark.transports("sqlite")
def test_rows_of_any_type_written_into_the_sqlite_table_are_buried_or_run(app, start_worker):
    """Someone writes rows by hand: TEXT, INTEGER and REAL bodies, a TEXT priority."""
    import sqlite3

    from runner.config.urls import parse_url
    from runner.stores.sqlite import sqlite_path

    good = envelope("typed-text", b"[[1,2],{}]").decode()
    app.broker.qsize("celery")  # (the file and its tables exist)
    with sqlite3.connect(sqlite_path(parse_url(app.conf.broker_url))) as db:
        db.executemany("INSERT INTO runner_messages (queue, priority, body) VALUES (?, ?, ?)",
                       [("celery", 0, "plain text body"), ("celery", 0, 12345),
                        ("celery", 0, 1.5), ("celery", "high", b"x\n[]"), ("celery", 0, good)])
    worker = start_worker("-c", "1")
    assert app.AsyncResult("typed-text").get(timeout=15) == 3  # valid JSON stored as TEXT
    letters = wait_for_dead_letters(app, 4, timeout=20)
    assert len(letters) == 4 and all(not d.task_id for d in letters)
    assert worker.proc.poll() is None and "Traceback" not in worker.log()


@pytest.mark.transports("sqlite")
def test_dead_letter_commands_on_a_broker_never_reached_say_so_in_one_line(worker_env,
                                                                           tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**worker_env, "RUNNER_BROKER_URL": f"redis://:secret@127.0.0.1:{port}/0",
           "RUNNER_BROKER_CONNECTION_TIMEOUT": "1"}
    for command in (["count"], ["list"], ["purge", "--all", "-f"], ["requeue", "--all"]):
        run = subprocess.run([sys.executable, "-m", "runner", "dead-letters", *command],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 2, (command, run.stderr)
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and "could not connect" in lines[0], (command, run.stderr)
        assert "secret" not in run.stderr


def test_a_chain_whose_later_step_is_too_large_is_refused_when_called(app):
    from runner import chain
    from runner.exceptions import MessageTooLarge

    app.conf.update(task_message_max_size=1000)
    add = app.tasks["tasks.add"]
    with pytest.raises(MessageTooLarge, match="workflow steps"):
        chain(add.s("a", "b"), add.s("x" * 2000))()
    with pytest.raises(MessageTooLarge):
        add.apply_async((1, 1), link=add.s("y" * 2000))
    assert app.broker.qsize("celery") == 0
