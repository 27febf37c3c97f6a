"""amqp:// broker and rpc:// backend against the real RabbitMQ of the machine (127.0.0.1:5672).

The module creates its own vhost and user with rabbitmqctl and deletes them afterwards; it is
skipped only where RabbitMQ is not installed or not reachable.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid

import pytest

from runner.brokers.registry import open_broker
from runner.exceptions import ConfigError
from runner.message import Message
from tests.helpers import rabbitmq_node, rabbitmqctl, require_rabbitmq

USER, PASSWORD = f"runner_test_{uuid.uuid4().hex[:8]}", "s3cret-pw"
VHOST = f"runner_test_{uuid.uuid4().hex[:8]}"
URL = f"amqp://{USER}:{PASSWORD}@127.0.0.1:5672/{VHOST}"


@pytest.fixture(scope="module", autouse=True)
def rabbitmq():
    require_rabbitmq()
    rabbitmqctl("add_vhost", VHOST)
    rabbitmqctl("add_user", USER, PASSWORD)
    rabbitmqctl("set_permissions", "-p", VHOST, USER, ".*", ".*", ".*")
    yield
    rabbitmqctl("delete_vhost", VHOST, check=False)
    rabbitmqctl("delete_user", USER, check=False)


@pytest.fixture
def amqp_app(app, worker_env, tmp_path):
    """The test app on this module's vhost: results on rpc:// (``amqp_app.sqlite`` for a test
    that wants them kept in SQLite)."""
    app.conf.update(broker_url=URL, result_backend="rpc://")
    app.broker.purge(["celery", "other"])
    worker_env.update(RUNNER_BROKER_URL=URL, RUNNER_RESULT_BACKEND="rpc://")
    return app


def use_sqlite_results(app, worker_env, tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/results.db"
    app.close()
    app.conf.update(result_backend=url)
    worker_env["RUNNER_RESULT_BACKEND"] = url


def message(i: int, queue: str = "celery", **fields) -> Message:
    return Message(id=f"m{i}", task="tasks.add", content_type="application/json",
                   payload=b"[[1,2],{}]", queue=queue, **fields)


SEED_APP = """\
from runner import Celery

app = Celery('seedtasks')
app.config_from_object('celeryconfig')


@app.task
def add(x, y):
    return x + y
"""


def test_seed_celeryconfig_runs_add_through_a_worker_with_rpc_results(
        amqp_app, worker_env, start_worker, tmp_path, monkeypatch):
    """The seed's celeryconfig (pyamqp:// broker, rpc:// results), on this module's vhost."""
    import tasks

    seed_url = URL.replace("amqp://", "pyamqp://")
    (tmp_path / "celeryconfig.py").write_text(
        f"broker_url = {seed_url!r}\nresult_backend = 'rpc://'\n")
    (tmp_path / "seedtasks.py").write_text(SEED_APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    for key in ("RUNNER_BROKER_URL", "RUNNER_RESULT_BACKEND"):
        worker_env.pop(key)
        monkeypatch.delenv(key, raising=False)
    start_worker("-c", "2", app="seedtasks")
    import seedtasks

    try:
        result = seedtasks.add.delay(4, 4)
        assert result.get(timeout=10) == 8
        assert result.state == "SUCCESS" and result.ready()
    finally:
        seedtasks.app.close()
    assert tasks  # the tests' app stays current for the other tests


def test_rpc_failure_propagates_and_other_callers_see_pending(amqp_app, start_worker):
    import tasks

    start_worker()
    failing = tasks.boom.delay("broken here")
    with pytest.raises(ValueError, match="broken here"):
        failing.get(timeout=10)
    assert failing.state == "FAILURE"
    result = tasks.add.delay(1, 1)
    assert result.get(timeout=10) == 2
    amqp_app.close()  # a new connection is another caller: the result went to the first one
    assert amqp_app.AsyncResult(result.id).state == "PENDING"


def reply_queues() -> dict[str, tuple[str, str]]:
    """The vhost's rpc:// reply queues: name -> (exclusive, x-expires)."""
    listed = rabbitmqctl("list_queues", "-p", VHOST, "name", "exclusive", "arguments",
                         "--formatter", "json").stdout
    return {q["name"]: (q["exclusive"], {a[0]: a[-1] for a in q["arguments"]}.get("x-expires"))
            for q in json.loads(listed) if q["name"].startswith("runner.reply.")}


def test_rpc_reply_queue_is_exclusive_and_goes_with_its_client(amqp_app, start_worker,
                                                                worker_env, tmp_path):
    start_worker()
    script = ("import tasks, time; r = tasks.add.delay(2, 2); assert r.get(timeout=20) == 4; "
              "print(r.app.backend.reply_to, flush=True); time.sleep(60)")
    client = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=worker_env,
                              stdout=subprocess.PIPE, text=True)
    try:
        name = client.stdout.readline().strip()
        assert name.startswith("runner.reply.")
        assert reply_queues()[name] == (True, 60000)
    finally:
        client.kill()  # a client that dies: its queue is gone with its connection
        client.wait()
    deadline = time.monotonic() + 10
    while name in reply_queues() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert name not in reply_queues()


def test_higher_priority_runs_first(amqp_app, worker_env, start_worker, tmp_path,
                                    wait_for_lines):
    """As with Celery, a RabbitMQ queue serves priorities once it has an x-max-priority."""
    import tasks

    amqp_app.close()
    amqp_app.conf.update(task_queue_max_priority=10)
    worker_env["RUNNER_TASK_QUEUE_MAX_PRIORITY"] = "10"
    marker = tmp_path / "order.log"
    for i, priority in enumerate([0, 3, 9, 1, 6]):
        tasks.record.apply_async((i, str(marker)), priority=priority, queue="ranked")
    start_worker("-c", "1", "--prefetch-multiplier", "1", "-Q", "ranked")
    assert wait_for_lines(marker, 5) == ["2", "4", "1", "3", "0"]


def test_queue_declared_with_other_priority_is_one_clear_error(amqp_app):
    """A queue that exists with another x-max-priority (say, declared by Celery or by runner
    with another setting) is one error naming the queue and the setting, not a traceback."""
    amqp_app.close()
    amqp_app.conf.update(task_queue_max_priority=5)
    amqp_app.broker.qsize("prio")  # declares "prio" with x-max-priority 5
    amqp_app.close()
    amqp_app.conf.update(task_queue_max_priority=None)
    with pytest.raises(ConfigError) as caught:
        amqp_app.broker.qsize("prio")
    text = str(caught.value)
    assert "'prio'" in text and "task_queue_max_priority" in text and VHOST in text
    amqp_app.close()
    amqp_app.conf.update(task_queue_max_priority=9)
    with pytest.raises(ConfigError, match="x-max-priority 9 .from max_priority in task_queues"):
        amqp_app.broker.qsize("prio")


def test_worker_on_a_queue_declared_with_other_priority_stops_with_one_error(
        amqp_app, worker_env, tmp_path):
    """Not "ready." and then failing fetches forever: the worker stops at start-up."""
    amqp_app.close()
    amqp_app.conf.update(task_queue_max_priority=5)
    amqp_app.broker.qsize("ranked5")  # "ranked5" now exists with x-max-priority 5
    done = subprocess.run([sys.executable, "-m", "runner", "worker", "-A", "tasks", "-c", "1",
                           "-Q", "ranked5"], env=worker_env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "'ranked5'" in errors[0]
    assert "task_queue_max_priority" in errors[0]
    assert "ready." not in done.stderr and "Traceback" not in done.stderr


def test_routed_task_runs_on_its_queue(amqp_app, start_worker):
    import tasks

    start_worker("-Q", "other")
    result = tasks.add.apply_async((2, 3), queue="other")
    assert result.get(timeout=10) == 5
    assert amqp_app.broker.qsize("celery") == 0


def test_countdown_is_held_by_rabbitmq_not_by_the_consumer(amqp_app, start_worker):
    import tasks

    start_worker()
    sent = time.monotonic()
    later = tasks.add.apply_async((1, 2), countdown=1.3)
    now = tasks.add.delay(5, 5)
    assert now.get(timeout=5) == 10  # the delayed task blocks nothing
    assert later.state == "PENDING"
    assert later.get(timeout=10) == 3
    assert 1.25 <= time.monotonic() - sent < 4


def test_killed_worker_task_is_redelivered(amqp_app, worker_env, tmp_path, start_worker,
                                           wait_for_lines):
    import tasks

    use_sqlite_results(amqp_app, worker_env, tmp_path)
    marker = tmp_path / "runs.log"
    first = start_worker()
    result = tasks.slow_late.delay(0.5, str(marker))
    wait_for_lines(marker, 1)
    first.kill_all()  # SIGKILL: nothing acked, RabbitMQ sees the connection die
    start_worker()
    assert result.get(timeout=15) == "done"
    assert len(wait_for_lines(marker, 2)) == 2


def test_wrong_password_and_missing_vhost_are_one_clear_config_error(amqp_app, worker_env,
                                                                     tmp_path):
    """As on Redis: refused credentials are a ConfigError (no retry fixes them)."""
    for url, expected in [
            (f"amqp://{USER}:wrong-pw@127.0.0.1:5672/{VHOST}", "wrong user name or password"),
            (f"amqp://{USER}:{PASSWORD}@127.0.0.1:5672/no_such_vhost", "vhost does not exist")]:
        with pytest.raises(ConfigError) as caught:
            open_broker(url)
        text = str(caught.value)
        assert expected in text and repr(USER) in text
        assert PASSWORD not in text and "wrong-pw" not in text
        env = {**worker_env, "RUNNER_BROKER_URL": url}
        done = subprocess.run([sys.executable, "-m", "runner", "call", "-A", "tasks",
                               "tasks.add"], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0] and "Traceback" not in done.stderr
        assert PASSWORD not in done.stderr and "wrong-pw" not in done.stderr


def test_purge_and_qsize(amqp_app):
    broker = open_broker(URL)
    try:
        broker.enqueue([message(i) for i in range(3)])
        assert broker.qsize("celery") == 3
        assert broker.purge(["celery"]) == 3
        assert broker.qsize("celery") == 0
    finally:
        broker.close()


def test_restart_under_load_loses_nothing(app, worker_env, tmp_path, start_worker):
    """RabbitMQ stopped and started again under load (a node of the test's own: the machine's
    serves other tests meanwhile): no task lost, durable messages kept, workers and producers
    reconnect, and the log names the broker without its password."""
    import tasks

    with rabbitmq_node("restart", lambda folder, port:
                       f"listeners.tcp.default = 127.0.0.1:{port}\n") as (node, port, _):
        url = f"amqp://guest:guest@127.0.0.1:{port}/"
        app.close()
        app.conf.update(broker_url=url)
        worker_env["RUNNER_BROKER_URL"] = url
        use_sqlite_results(app, worker_env, tmp_path)
        worker = start_worker("-c", "2")
        durable = open_broker(url)
        durable.enqueue([message(i, queue="kept") for i in range(5)])  # nobody consumes "kept"
        results = [tasks.add.delay(i, i) for i in range(20)]
        try:
            rabbitmqctl("-n", node, "stop_app")
            time.sleep(0.5)
        finally:
            rabbitmqctl("-n", node, "start_app")
        rabbitmqctl("-n", node, "await_startup")
        results += [tasks.add.delay(i, i) for i in range(20, 40)]  # the producer reconnects
        assert [r.get(timeout=30) for r in results] == [2 * i for i in range(40)]
        durable.close()
        again = open_broker(url)
        try:
            assert again.qsize("kept") == 5
        finally:
            again.close()
        log = worker.log()
        assert "reconnected to RabbitMQ" in log
        assert f"amqp://guest:**@127.0.0.1:{port}/" in log and "guest:guest" not in log
        worker.signal(signal.SIGTERM)
        worker.proc.wait(15)
        app.close()


PIPELINE = """\
name: on-rabbit
app: pipeline_tasks
steps:
  first:
    task: pipeline_tasks.echo
    args: [1]
  second:
    task: pipeline_tasks.echo
    needs: [first]
    args: ["{{ steps.first.result }}"]
"""


def test_pipeline_runs_on_amqp_with_sqlite_results(pipelines, worker_env, tmp_path):
    results = f"sqlite:///{tmp_path}/results.db"
    pipelines.app.conf.update(broker_url=URL, result_backend=results)
    worker_env.update(RUNNER_BROKER_URL=URL, RUNNER_RESULT_BACKEND=results)
    pipelines.worker()
    run = pipelines.submit(pipelines.write(PIPELINE))
    assert pipelines.wait(run).state == "success"


def test_pipeline_with_rpc_results_alone_is_refused(pipelines, worker_env):
    pipelines.app.conf.update(broker_url=URL, result_backend="rpc://")
    worker_env.update(RUNNER_BROKER_URL=URL, RUNNER_RESULT_BACKEND="rpc://")
    path = pipelines.write(PIPELINE)
    for command in ("submit", "run"):
        done = pipelines.cli(command, path)
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert "rpc://" in lines[-1] and "keeps" in lines[-1] and "Traceback" not in done.stderr


def test_long_task_outlives_the_heartbeat_timeout_and_runs_once(
        amqp_app, worker_env, tmp_path, start_worker, wait_for_lines):
    """A child busy with one task still answers RabbitMQ's heartbeats: RabbitMQ would close a
    silent connection (after two missed heartbeats) and give its unacked message to another
    process, to run twice."""
    import tasks

    use_sqlite_results(amqp_app, worker_env, tmp_path)
    marker = tmp_path / "runs.log"
    worker = start_worker("-c", "2", env={
        "RUNNER_BROKER_TRANSPORT_OPTIONS": json.dumps({"heartbeat": 1})})
    result = tasks.slow_late.delay(5, str(marker))
    assert result.get(timeout=20) == "done"
    time.sleep(1)
    assert len(marker.read_text().split()) == 1
    assert "lost RabbitMQ" not in worker.log()


def test_child_whose_connection_is_lost_during_a_long_task_consumes_again_after_it(
        amqp_app, worker_env, tmp_path, start_worker, wait_for_lines):
    """The connection of a child is closed while its only task runs: the task's ack is lost
    with it (RabbitMQ delivers the message again, and its stored result keeps it from running
    twice), and the child reconnects and takes new tasks."""
    import tasks

    use_sqlite_results(amqp_app, worker_env, tmp_path)
    worker = start_worker("-c", "1", env={
        "RUNNER_BROKER_TRANSPORT_OPTIONS": json.dumps({"heartbeat": 1})})
    marker = tmp_path / "started"
    long = tasks.sleep_marked.delay(3, str(marker))
    wait_for_lines(marker, 1)
    rabbitmqctl("close_all_connections", "-p", VHOST, "test: connection lost")
    assert long.get(timeout=20) == "done"
    assert tasks.add.delay(2, 2).get(timeout=20) == 4
    time.sleep(0.5)
    assert len(marker.read_text().split()) == 1
    assert "fetching failed" not in worker.log()


def test_redelivered_message_whose_result_is_stored_is_not_run_again(
        amqp_app, worker_env, tmp_path, start_worker):
    """A process that stored a result but died before its ack: RabbitMQ delivers the message
    again, and the worker settles it without running the task a second time."""
    import pika
    import tasks

    from runner import states
    from runner.backends.base import ResultRecord

    use_sqlite_results(amqp_app, worker_env, tmp_path)
    marker = tmp_path / "runs.log"
    result = tasks.slow_late.delay(0, str(marker))
    amqp_app.backend.store([ResultRecord(result.id, states.SUCCESS, "application/json",
                                         b'"done before"', date_done=time.time())])
    # Take the message without acking it, then drop the connection: it comes back redelivered.
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    taken = connection.channel().basic_get("celery")[0]
    assert taken is not None and not taken.redelivered
    connection.close()
    worker = start_worker()
    worker.wait_for_log(f"Task tasks.slow_late[{result.id}] was delivered again, but its "
                        f"result (SUCCESS) is stored: not running it again")
    assert not marker.exists()
    assert result.get(timeout=10) == "done before"
    time.sleep(0.5)
    assert amqp_app.broker.qsize("celery") == 0  # settled: acked, not left in the queue


def test_producer_idle_past_the_heartbeat_timeout_sends_without_a_reconnect(amqp_app, caplog):
    """A producer's connection is only used to publish: RabbitMQ must not close it for missed
    heartbeats while the program does other things (a web app between requests)."""
    import tasks

    amqp_app.close()
    amqp_app.conf.update(broker_transport_options={"heartbeat": 1})
    tasks.add.delay(1, 1)
    time.sleep(3.5)  # more than two heartbeat intervals
    with caplog.at_level("WARNING", logger="runner.amqp"):
        tasks.add.delay(2, 2)
    assert "lost RabbitMQ" not in caplog.text
    assert amqp_app.broker.qsize("celery") == 2


def test_delay_returns_before_the_confirm_and_flush_waits_for_it(amqp_app):
    """Streamed confirms: delay() does not wait for RabbitMQ's disk write; flush() (also run
    before an ack, at close and at exit) returns once RabbitMQ confirmed everything sent."""
    import tasks

    results = [tasks.add.delay(i, i) for i in range(200)]
    publisher = amqp_app.broker._publisher()
    assert publisher.pending > 0  # 200 publishes outran RabbitMQ's confirms
    amqp_app.broker.flush()
    assert publisher.pending == 0
    assert amqp_app.broker.qsize("celery") == len(results)


def test_messages_larger_than_the_socket_buffer_arrive_whole_and_in_order(amqp_app,
                                                                         start_worker):
    """Frames go to the socket at once while nothing waits before them; what the socket does
    not take (an 8 MB message) is sent by pika's loop, and later frames queue behind it."""
    import tasks

    start_worker("-c", "2")
    big = "x" * (8 << 20)
    results = [tasks.echo.delay(i) for i in range(3)] + [tasks.echo.delay(big)] + \
        [tasks.echo.delay(i) for i in range(3, 6)]
    values = [r.get(timeout=30) for r in results]
    assert values[:3] + values[4:] == list(range(6))
    assert values[3] == big


def test_confirm_publish_makes_each_delay_wait_for_its_confirm(amqp_app):
    import tasks

    amqp_app.close()
    amqp_app.conf.update(broker_transport_options={"confirm_publish": True})
    tasks.add.delay(1, 1)
    assert amqp_app.broker._publisher().pending == 0


def test_unconfirmed_messages_are_sent_again_after_the_connection_is_lost(amqp_app, caplog):
    """What RabbitMQ had not confirmed when the connection went is sent again on the next
    connection. (A message RabbitMQ lost cannot be made on demand: one is put among the
    unconfirmed as if RabbitMQ had never got it.)"""
    import pika

    from runner.brokers.amqp_publisher import Outgoing

    broker = amqp_app.broker
    broker.enqueue([message(1)])
    broker.flush()
    publisher = broker._publisher()
    lost = message(2)
    publisher.unconfirmed[10_000] = Outgoing(
        "celery", lost.encode(), pika.BasicProperties(delivery_mode=2, message_id=lost.id),
        None)
    rabbitmqctl("close_all_connections", "-p", VHOST, "test: connection lost")
    time.sleep(0.5)
    with caplog.at_level("WARNING", logger="runner.amqp"):
        broker.enqueue([message(3)])
        broker.flush()
    assert "message(s) RabbitMQ had not confirmed when the connection was lost" in caplog.text
    assert broker.qsize("celery") == 3
    ids = []
    while len(ids) < 3:
        ids += [Message.decode(d.body).id for d in broker.fetch(["celery"], 3, "test")]
    assert sorted(ids) == ["m1", "m2", "m3"]


def test_message_sent_again_after_a_lost_confirm_does_not_run_twice(
        amqp_app, worker_env, tmp_path, start_worker):
    """RabbitMQ took a message but its confirm was lost with the connection: the producer
    sends it again, so the queue holds it twice. The copy is marked, and the worker that finds
    its result stored settles it instead of running the task again. (A lost confirm cannot be
    made on demand: a message already sent is put among the unconfirmed.)"""
    import pika
    import tasks

    from runner.brokers.amqp_publisher import Outgoing

    use_sqlite_results(amqp_app, worker_env, tmp_path)
    marker = tmp_path / "runs.log"
    result = tasks.sleep_marked.delay(0, str(marker))
    broker = amqp_app.broker
    broker.flush()
    sent = amqp_app.build_message("tasks.sleep_marked", (0, str(marker)), task_id=result.id)
    publisher = broker._publisher()
    publisher.unconfirmed[10_000] = Outgoing(
        "celery", sent.encode(), pika.BasicProperties(delivery_mode=2, message_id=sent.id),
        None)
    rabbitmqctl("close_all_connections", "-p", VHOST, "test: connection lost")
    time.sleep(0.5)
    broker.enqueue([message(3)])  # (a message for no task: the worker discards it)
    broker.flush()
    assert broker.qsize("celery") == 3
    worker = start_worker("-c", "1")
    assert result.get(timeout=10) == "done"
    worker.wait_for_log(f"Task tasks.sleep_marked[{result.id}] was delivered again, but its "
                        f"result (SUCCESS) is stored: not running it again")
    assert len(marker.read_text().split()) == 1


def test_messages_rabbitmq_refuses_are_sent_again_until_taken(
        amqp_app, worker_env, tmp_path, start_worker, caplog):
    """A queue at its max-length with overflow reject-publish nacks publishes: they are kept
    and sent again with backoff (get() makes sure its task was sent while it waits), until
    the queue has room; nothing is lost."""
    import tasks

    use_sqlite_results(amqp_app, worker_env, tmp_path)
    rabbitmqctl("set_policy", "-p", VHOST, "full", "^celery$",
                json.dumps({"max-length": 1, "overflow": "reject-publish"}),
                "--apply-to", "queues")
    try:
        with caplog.at_level("WARNING", logger="runner.amqp"):
            results = [tasks.add.delay(i, i) for i in range(4)]
            start_worker("-c", "1")
            assert [r.get(timeout=30) for r in results] == [0, 2, 4, 6]
        assert "refused" in caplog.text and "sending again" in caplog.text
    finally:
        rabbitmqctl("clear_policy", "-p", VHOST, "full")


def test_quorum_queues_as_celery_sets_them(amqp_app, start_worker, worker_env):
    """task_default_queue_type = 'quorum' (or x-queue-type in task_queues): the queues runner
    declares are replicated quorum queues, and tasks run through them as before."""
    import tasks

    amqp_app.close()
    amqp_app.conf.update(task_default_queue_type="quorum")
    worker_env["RUNNER_TASK_DEFAULT_QUEUE_TYPE"] = "quorum"
    start_worker("-Q", "replicated-a,replicated-b")  # (this module's vhost has a classic celery)
    assert tasks.add.apply_async((2, 3), queue="replicated-a").get(timeout=20) == 5
    assert tasks.add.apply_async((1, 1), queue="replicated-b").get(timeout=20) == 2
    listed = json.loads(rabbitmqctl("list_queues", "-p", VHOST, "name", "type", "--formatter",
                                    "json").stdout)
    types = {q["name"]: q["type"] for q in listed}
    assert types["replicated-a"] == "quorum" and types["replicated-b"] == "quorum"
    amqp_app.close()
    amqp_app.conf.update(task_queue_max_priority=5)
    with pytest.raises(ConfigError, match="a quorum queue has no priorities"):
        tasks.add.apply_async((1, 1), queue="ranked-quorum")
