"""Celery code moved over with one import changed: shared_task, update_state read from
another process, Task base classes with handlers, class-based tasks, current_task and the
request, run by a real worker."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.transports("sqlite", "redis")


@pytest.fixture
def api(db_url, broker_url, tmp_path, monkeypatch):
    import celery_api_tasks

    from runner import _state

    notes = tmp_path / "notes.jsonl"
    monkeypatch.setenv("API_NOTES", str(notes))
    celery_api_tasks.app.conf.update(broker_url=broker_url, result_backend=db_url)
    _state.set_current_app(celery_api_tasks.app)
    yield celery_api_tasks, notes
    celery_api_tasks.app.close()


def read_notes(path, count, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= count or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.02)


def test_update_state_is_read_from_another_process_until_the_result(api, start_worker,
                                                                    tmp_path, worker_env):
    module, _ = api
    gate = tmp_path / "gate"
    start_worker(app="celery_api_tasks", env={"API_NOTES": str(tmp_path / "n")})
    result = module.progress.delay(3, str(gate))
    deadline = time.monotonic() + 15
    while result.state != "PROGRESS" or result.info["current"] != 2:
        assert time.monotonic() < deadline, (result.state, result.info)
        time.sleep(0.02)
    assert result.info == {"current": 2, "total": 3} and not result.ready()
    gate.touch()
    assert result.get(timeout=10) == {"current": 3, "total": 3}
    assert result.state == "SUCCESS"


def test_a_base_class_gets_celerys_handlers_in_the_worker(api, start_worker):
    module, notes = api
    worker = start_worker(app="celery_api_tasks", env={"API_NOTES": str(notes)})
    ok, bad = module.divide.delay(6, 3), module.divide.delay(1, 0)
    assert ok.get(timeout=10) == 2.0
    with pytest.raises(ZeroDivisionError):
        bad.get(timeout=10)
    seen = read_notes(notes, 6)
    by_task = {}
    for item in seen:
        by_task.setdefault(item["task_id"], []).append(item)
    assert [e["event"] for e in by_task[ok.id]] == ["before_start", "on_success",
                                                    "after_return"]
    assert by_task[ok.id][1]["retval"] == 2.0 and by_task[ok.id][2]["status"] == "SUCCESS"
    failure = by_task[bad.id]
    assert [e["event"] for e in failure] == ["before_start", "on_failure", "after_return"]
    assert failure[1]["tb"] and failure[1]["type"] == "ZeroDivisionError"
    assert failure[2]["status"] == "FAILURE"
    assert all(e["pid"] != worker.pid for e in seen)  # in the pool's process, as Celery


def test_shared_and_class_based_tasks_run_and_know_their_request(api, start_worker):
    module, _ = api
    start_worker(app="celery_api_tasks", env={"API_NOTES": "/dev/null"})
    assert module.multiply.delay(6, 7).get(timeout=10) == 42
    result = module.who_runs.apply_async((1, "a"), {"k": 2}, priority=3, countdown=0.1,
                                         expires=60)
    info = result.get(timeout=10)
    assert info["name"] == "celery_api_tasks.who_runs" and info["id"] == result.id
    assert info["correlation_id"] == result.id and info["hostname"].startswith("celery@")
    assert info["is_eager"] is False and info["called_directly"] is False
    assert info["args"] == [1, "a"] and info["kwargs"] == {"k": 2} and info["retries"] == 0
    assert info["eta"] > 0 and info["expires"] > info["eta"]
    assert info["root_id"] == result.id and info["parent_id"] is None
    assert info["group"] is None and info["chord"] is None
    from runner import group

    members = group(module.who_runs.s(), module.who_runs.s()).apply_async().get(timeout=10)
    assert members[0]["group"] and members[0]["group"] == members[1]["group"]
    delivery = info["delivery_info"]
    assert delivery["routing_key"] == "celery" and delivery["redelivered"] is False
    assert {"exchange", "priority"} <= set(delivery)


def test_update_state_with_a_bad_state_or_meta_is_a_clear_error(api, start_worker):
    module, _ = api
    start_worker(app="celery_api_tasks", env={"API_NOTES": "/dev/null"})
    from runner.exceptions import RunnerError

    with pytest.raises(RunnerError, match=r"state must be a non-empty string"):
        module.bad_state.delay("state").get(timeout=10)
    with pytest.raises(RunnerError, match=r"meta cannot be stored with the 'json' result"):
        module.bad_state.delay("meta").get(timeout=10)


def test_base_that_is_not_a_task_class_is_refused_at_the_decorator(api):
    module, _ = api
    with pytest.raises(TypeError, match=r"base must be a Task class"):
        module.app.task(base=dict)(lambda: None)


def test_shared_task_binds_to_apps_made_later_and_current_app_is_a_proxy(api):
    from runner import Celery, current_app, shared_task

    @shared_task(name="later.double")
    def double(x):
        return 2 * x

    later = Celery("later", broker="memory://", backend="memory://")
    assert "later.double" in later.tasks and "later.double" in api[0].app.tasks
    assert current_app.main == "later" and current_app() is later
    assert double.app is later and double(4) == 8
    assert later.conf.task_always_eager is False
    later.conf.task_always_eager = True
    assert double.delay(5).get() == 10


@pytest.mark.transports("sqlite")
def test_autodiscover_tasks_is_lazy_takes_a_callable_and_names_a_missing_package(
        tmp_path, monkeypatch):
    from runner import Celery
    from runner.exceptions import AppImportError

    for package, body in (("shop", "from runner import shared_task\n\n@shared_task\n"
                                   "def sell(n):\n    return f'sold {n}'\n"),
                          ("blog", None)):  # blog has no tasks module: skipped
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
        if body:
            (tmp_path / package / "tasks.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    app = Celery("proj", broker="memory://", backend="memory://")
    app.autodiscover_tasks(lambda: ["shop", "blog"])  # as Django passes INSTALLED_APPS
    assert "shop.tasks.sell" not in app.tasks  # lazy: nothing imported yet
    assert app.get_task("shop.tasks.sell")(2) == "sold 2"  # looked up: discovered
    with pytest.raises(AppImportError, match=r"autodiscover_tasks: package 'nowhere'"):
        app.autodiscover_tasks(["nowhere"], force=True)


@pytest.mark.transports("sqlite")
def test_task_annotations_change_a_tasks_options_in_the_worker(app, start_worker):
    from runner.exceptions import TimeLimitExceeded

    start_worker("-c", "1", env={"RUNNER_TASK_ANNOTATIONS":
                                 '{"tasks.sleep": {"time_limit": 0.5}}'})
    started = time.monotonic()
    with pytest.raises(TimeLimitExceeded):
        app.tasks["tasks.sleep"].delay(30).get(timeout=20)
    assert time.monotonic() - started < 10
    assert app.tasks["tasks.add"].delay(1, 2).get(timeout=10) == 3  # others are untouched


@pytest.mark.transports("redis")
def test_result_backend_transport_options_reach_the_backend(app, start_worker, redis_server):
    import redis

    options = '{"global_keyprefix": "myresults:"}'
    app.conf.update(result_backend_transport_options={"global_keyprefix": "myresults:"})
    start_worker("-c", "1", env={"RUNNER_RESULT_BACKEND_TRANSPORT_OPTIONS": options})
    result = app.tasks["tasks.add"].delay(2, 2)
    assert result.get(timeout=10) == 4
    keys = [k.decode() for k in redis.Redis(port=redis_server.port).keys("myresults:*")]
    assert any(result.id in key for key in keys), keys


@pytest.mark.transports("sqlite")
def test_get_task_logger_lines_name_the_task_and_its_id(api, start_worker):
    module, _ = api
    worker = start_worker(app="celery_api_tasks", env={"API_NOTES": "/dev/null"})
    result = module.chatty.delay("hello")
    assert result.get(timeout=10) == "hello"
    worker.wait_for_log(f"celery_api_tasks.chatty[{result.id}]: saying hello")
    line = next(x for x in worker.log().splitlines() if "saying hello" in x)
    assert line.startswith("[") and "WARNING/" in line


@pytest.mark.transports("sqlite")
def test_a_celery_api_runner_lacks_is_a_clear_error_naming_it():
    from runner import Celery
    from runner.exceptions import NotSupported

    app = Celery("proj", broker="memory://", backend="memory://", set_as_current=False)
    assert not hasattr(app.control, "election")  # hasattr probes still answer False
    with pytest.raises(NotSupported, match=r"app.control.election: .*Remote control"):
        app.control.election()
    with pytest.raises(AttributeError):
        app.control.no_such_thing  # noqa: B018
