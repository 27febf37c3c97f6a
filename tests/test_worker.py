"""``runner worker``: its options, its banner and its log, against real worker processes."""

from __future__ import annotations

import re

import pytest


def test_banner_shows_app_broker_backend_concurrency_queues_and_tasks(db_url, start_worker):
    worker = start_worker("-c", "3", "-Q", "alpha,beta")
    log = worker.log()
    assert re.search(r"\.> app: +tasks:0x", log)
    assert f".> transport:   {db_url}" in log
    assert f".> results:     {db_url}" in log
    assert ".> concurrency: 3 (prefork)" in log
    assert ".> alpha" in log and ".> beta" in log
    assert "[tasks]" in log
    for name in ("tasks.add", "tasks.sleep", "tasks.whoami"):
        assert f"  . {name}" in log


def test_banner_masks_passwords_in_broker_and_backend_urls():
    from runner import Celery
    from runner.cli.worker import banner
    from runner.worker.held import WorkerOptions

    app = Celery("masked", broker="redis://:hunter2@localhost:6379/0",
                 backend="redis://user:hunter2@localhost/1")
    text = banner(app, WorkerOptions(concurrency=2, queues=["celery"], hostname="w@h"))
    assert "hunter2" not in text
    assert "redis://:**@localhost:6379/0" in text
    assert "redis://user:**@localhost/1" in text


def test_worker_logs_each_task_received_succeeded_with_runtime_and_failed(app, start_worker):
    from tasks import add, boom

    worker = start_worker("-c", "1")
    ok, bad = add.delay(2, 3), boom.delay("no luck")
    assert ok.get(timeout=10) == 5
    assert bad.get(timeout=10, propagate=False).args == ("no luck",)
    worker.wait_for_log(f"Task tasks.boom[{bad.id}] raised unexpected: ValueError('no luck')")
    log = worker.log()
    assert f"Task tasks.add[{ok.id}] received" in log
    assert re.search(rf"Task tasks\.add\[{ok.id}\] succeeded in \d+\.\d+s: 5", log)
    assert f"Task tasks.boom[{bad.id}] received" in log
    assert 'raise ValueError(message)' in log  # the traceback follows the failure line


def test_app_given_as_module_colon_attribute(app, start_worker):
    from tasks import add

    start_worker("-A", "tasks:app")  # the last -A wins, as with click
    assert add.delay(1, 1).get(timeout=10) == 2


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo", "asyncio"])
def test_each_pool_runs_tasks(app, start_worker, pool):
    from tasks import add, boom, whoami

    worker = start_worker("-P", pool, "-c", "2")
    assert f"({pool}" in worker.log()  # (asyncio: "(asyncio, uvloop loop)")
    results = [add.delay(i, i) for i in range(10)]
    assert [r.get(timeout=10) for r in results] == [2 * i for i in range(10)]
    with pytest.raises(ValueError, match="kaput"):
        boom.delay().get(timeout=10)
    where = whoami.delay().get(timeout=10)
    if pool in ("prefork", "asyncio"):  # (asyncio: one process by default, --processes)
        assert where["pid"] != worker.pid  # ran in a child process
    else:
        assert where["pid"] == worker.pid  # ran inside the worker process


def test_worker_consumes_only_the_queues_given_with_q(app, start_worker):
    from tasks import add, whoami

    start_worker("-Q", "q1,q2")
    one = whoami.apply_async(queue="q1")
    two = whoami.apply_async(queue="q2")
    other = add.apply_async((1, 2), queue="q3")
    assert one.get(timeout=10)["queue"] == "q1"
    assert two.get(timeout=10)["queue"] == "q2"
    assert other.state == "PENDING"
    assert app.broker.qsize("q3") == 1
    assert app.broker.qsize("celery") == 0


def test_hostname_appears_in_banner_and_in_the_task_request(app, start_worker):
    from tasks import whoami

    worker = start_worker("-n", "billing@node7")
    assert " -------------- billing@node7 v" in worker.log()
    assert "billing@node7 ready." in worker.log()
    assert whoami.delay().get(timeout=10)["hostname"] == "billing@node7"


def test_max_tasks_per_child_replaces_the_child_after_n_tasks(app, start_worker):
    from tasks import pid

    start_worker("-c", "1", "--max-tasks-per-child", "2")
    pids = [pid.delay().get(timeout=10) for _ in range(6)]
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[4] == pids[5]
    assert len(set(pids)) == 3


def test_max_tasks_per_child_also_where_the_worker_hands_out_the_tasks(
        app, start_worker, tmp_path, wait_for_lines):
    """With results kept in the worker's memory (memory://), its main process hands the
    tasks to the children and takes their results back: it replaces a child after N tasks."""
    from tasks import sleep_marked

    start_worker("-c", "1", "--max-tasks-per-child", "2",
                 env={"RUNNER_RESULT_BACKEND": "memory://"})
    marker = tmp_path / "pids"
    for _ in range(6):
        sleep_marked.delay(0, str(marker))
    pids = wait_for_lines(marker, 6)
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[4] == pids[5]
    assert len(set(pids)) == 3


def test_max_memory_per_child_replaces_a_child_past_the_limit(app, start_worker):
    from tasks import pid

    start_worker("-c", "1", "--max-memory-per-child", "1")  # 1 KiB: every child is past it
    pids = [pid.delay().get(timeout=10) for _ in range(3)]
    assert len(set(pids)) == 3


@pytest.mark.transports("sqlite", "redis", "amqp")
def test_child_past_the_memory_limit_gives_back_what_it_claimed_next(app, start_worker):
    """A child claims its next task with the write that settles the last one; past the limit,
    it gives that one back as it exits (before, it waited out the visibility timeout)."""
    from tasks import pid

    start_worker("-c", "1", "--max-memory-per-child", "1")
    results = [pid.delay() for _ in range(6)]
    pids = [r.get(timeout=10) for r in results]
    assert len(set(pids)) == 6


def test_child_is_kept_below_the_memory_limit(app, start_worker):
    from tasks import pid

    start_worker("-c", "1", "--max-memory-per-child", str(10 * 1024 * 1024))  # 10 GiB
    pids = [pid.delay().get(timeout=10) for _ in range(3)]
    assert len(set(pids)) == 1


def test_prefetch_multiplier_limits_how_many_tasks_a_worker_claims(app, start_worker):
    from tasks import sleep

    worker = start_worker("-c", "1", "--prefetch-multiplier", "1")
    assert ".> prefetch:    1 x concurrency" in worker.log()
    results = [sleep.delay(0.5, i) for i in range(4)]
    worker.wait_for_log(f"Task tasks.sleep[{results[0].id}] received")
    assert app.broker.qsize("celery") == 3  # only one claimed: another worker could take them
    assert [r.get(timeout=10) for r in results] == [0, 1, 2, 3]


def test_default_prefetch_claims_several_tasks_per_process(app, start_worker):
    from tasks import sleep

    worker = start_worker("-c", "1")  # worker_prefetch_multiplier = 4
    results = [sleep.delay(0.5, i) for i in range(4)]
    worker.wait_for_log(f"Task tasks.sleep[{results[3].id}] received")
    assert app.broker.qsize("celery") == 0
    assert [r.get(timeout=10) for r in results] == [0, 1, 2, 3]


def test_hostname_placeholder_is_replaced_by_the_machine_name(app, start_worker):
    import socket

    from tasks import whoami

    worker = start_worker("-n", "w1@%h")
    assert f"w1@{socket.gethostname()} ready." in worker.log()
    assert whoami.delay().get(timeout=10)["hostname"] == f"w1@{socket.gethostname()}"


def test_task_the_worker_does_not_know_fails_and_names_it(app, start_worker):
    from runner.exceptions import NotRegistered

    worker = start_worker("-c", "1")
    result = app.send_task("tasks.not_defined_here", args=[1])
    with pytest.raises(NotRegistered, match="tasks.not_defined_here"):
        result.get(timeout=10)
    worker.wait_for_log("tasks.not_defined_here")
    from tasks import add

    assert add.delay(1, 1).get(timeout=10) == 2
