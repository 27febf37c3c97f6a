"""Every setting changes what runner does, or says it does not (``NOT_ACTED_ON``).

The test walks the settings model: each setting has a probe here, a look at what the part of
runner that acts on the setting does (the message a producer builds, what a worker looks up
before a task runs, the options a worker starts with, the policy a connection follows, the
logging a worker sets up, beat's scheduler), once with the default and once with the value
given here; the two must differ. A setting added without a probe, or one whose probe shows no
difference, fails the test. What each part then does with it (a worker honouring a time limit,
a broker its visibility timeout) is tested end to end elsewhere.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import datetime
from typing import Any

import pytest

from runner import Celery
from runner.brokers.base import Delivery
from runner.config.settings import NOT_ACTED_ON, Settings
from runner.connections import max_priorities, queue_types
from runner.reconnect import ConnectPolicy
from runner.worker.consumer import Fetched
from runner.worker.events import heartbeat_every, task_events_on
from runner.worker.trace import acks_late_of, handle, rejects_on_worker_lost, time_limit_of


def echo(x):
    return x


def boom():
    raise ValueError("boom")


def make_app(tmp_path, changes: dict[str, Any]) -> Celery:
    url = f"sqlite:///{tmp_path}/probe-{len(list(tmp_path.iterdir()))}.db"
    app = Celery("probe", broker=url, backend=url, set_as_current=False)
    app.task(name="probe.echo")(echo)
    app.task(name="probe.boom")(boom)
    if changes:
        app.conf.update(changes)
    return app


def message(app, *args, **options):
    return app.build_message("probe.echo", args or (1,), {}, _task=app.tasks["probe.echo"],
                             **options)


def task(app, option):
    return app.tasks["probe.echo"].effective(option)


def loop_watchers(app):
    """Whether an asyncio pool starts its watchdog of a blocked event loop (0: none)."""
    import threading

    from runner.worker.aio import AsyncioPool

    pool = AsyncioPool(app, 2, "probe@host", app.task_accept)
    pool.start()
    try:
        return any(t.name == "runner-asyncio-watch" for t in threading.enumerate())
    finally:
        pool.stop(kill=True)


def event_loop_module(app):
    """The module of the asyncio pool's event loop's class (uvloop's or asyncio's)."""
    from runner.worker.aio import AsyncioPool

    pool = AsyncioPool(app, 2, "probe@host", app.task_accept)
    pool.start()
    try:
        return type(pool._loop).__module__.split(".")[0]
    finally:
        pool.stop(kill=True)


def gc_threshold(app):
    """The youngest generation's threshold a prefork worker's processes run with."""
    from runner.worker.collector import threshold_for

    return threshold_for(app.conf.worker_gc_threshold, "prefork")


def idempotency_window(app):
    """Who holds a key claimed again 0.2 s after a first claim (the first, within the
    window; the second once it passed)."""
    from runner.idempotency import claim

    window = app.conf.task_idempotency_window
    claim(app.backend, "probe-key", "first", window)
    time.sleep(0.2)
    return claim(app.backend, "probe-key", "second", window)[0]


def signing(app):
    """What signs this app's messages once task_serializer is 'auth' (files read when used)."""
    app.conf.update(task_serializer="auth")
    return app.security


def policy(app) -> ConnectPolicy:
    return ConnectPolicy.from_options(app._transport_options())


def ran(app):
    """The record a worker stores for one run of probe.echo."""
    msg = message(app, [1, 2])
    return handle(app, 1, msg, "probe@host", frozenset({"application/json"}),
                  {"queue": "celery"}).record


def chord_header_errbacks(app):
    """The errbacks a chord's header task gets from the chord's link_error."""
    from runner import chord

    joined = chord([app.tasks["probe.echo"].s(1)], app.tasks["probe.echo"].s(), app=app)
    joined.link_error(app.tasks["probe.boom"].si())
    return len(joined.tasks[0].options.get("link_error") or ())


def worker_options(app):
    from runner.cli.worker import worker_options as options_of

    given = dict.fromkeys(["exclude_queues", "queues", "autoscale", "prefetch_multiplier",
                           "concurrency", "pool", "hostname", "max_tasks_per_child",
                           "max_memory_per_child"])
    return options_of(app.conf, given)


def logging_set_up(app):
    """What runner.log sets up for a worker: root and task handlers' formats, and whether a
    handler the project had added is kept."""
    from runner.log import TASK_LOGGER, setup_logging_subsystem

    root, tasks = logging.getLogger(), logging.getLogger(TASK_LOGGER)
    saved = (root.handlers[:], root.level, tasks.handlers[:], tasks.propagate, tasks.level)
    mine = logging.NullHandler()
    root.addHandler(mine)
    try:
        setup_logging_subsystem(app, "INFO", make_handler=logging.NullHandler)
        return ([h.formatter._fmt for h in root.handlers if h.formatter],
                [h.formatter._fmt for h in tasks.handlers if h.formatter], mine in root.handlers)
    finally:
        root.handlers[:], tasks.handlers[:] = saved[0], saved[2]
        root.setLevel(saved[1])
        tasks.propagate, tasks.level = saved[3], saved[4]


def scheduler(app):
    from runner.beat.scheduler import Beat

    made = Beat(app, [])
    return made.max_interval, made.lease_seconds, made.history_keep


def entries(app):
    from runner.beat.entries import build_entries

    return [(e.name, e.catchup_limit) for e in build_entries(app)]


def read_in_tokyo(app, naive: datetime) -> float:
    """Epoch seconds of a naive eta on a machine whose local time is Tokyo's."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    try:
        return app.to_timestamp(naive)
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


def refused(build):
    try:
        build()
    except Exception as exc:  # noqa: BLE001 - the probe is which error, if any
        return type(exc).__name__
    return "sent"


def imported(app, module):
    sys.modules.pop(module, None)
    app.import_task_modules()
    return module in sys.modules


def eagerly_failing(app):
    try:
        return type(app.tasks["probe.boom"].delay()).__name__
    except ValueError:
        return "raised"


def sort_out_a_fifth_delivery(app):
    from runner.worker.dead import sort_out

    msg = message(app)
    kept, buried = sort_out(app, [Fetched(Delivery(1, b"", "celery", True, 5), msg)], "h")
    return len(buried)


SCHEDULE = {"every": {"task": "probe.echo", "schedule": 30.0, "args": (1,)}}

#: setting -> (a value other than the default, the probe that must tell them apart)
PROBES: dict[str, tuple[Any, Any]] = {
    "broker_url": ("memory://", lambda app: app.broker.scheme),
    "broker_transport_options": ({"visibility_timeout": 7},
                                 lambda app: app.broker.visibility_timeout),
    "broker_connection_retry": (False, lambda app: policy(app).retry_on_startup),
    "broker_connection_retry_on_startup": (False, lambda app: policy(app).retry_on_startup),
    "broker_connection_max_retries": (3, lambda app: policy(app).max_retries),
    "broker_connection_timeout": (1.5, lambda app: policy(app).timeout),
    "result_backend": ("memory://", lambda app: app.backend.scheme),
    "result_backend_transport_options": ({"polling_interval": 0.5},
                                         lambda app: app.backend.transport_options),
    "result_expires": (60, lambda app: app.backend.expires),
    "result_serializer": ("yaml", lambda app: ran(app).content_type),
    "result_accept_content": (["yaml"], lambda app: app.result_accept),
    "result_extended": (True, lambda app: ran(app).meta.get("args")),
    "task_serializer": ("yaml", lambda app: message(app).content_type),
    "accept_content": (["json", "yaml"], lambda app: len(app.conf.accept_content)),
    "timezone": ("Asia/Tokyo", lambda app: app.to_timestamp(datetime(2026, 1, 1, 12))),
    "enable_utc": (False, lambda app: read_in_tokyo(app, datetime(2026, 1, 1, 12))),
    "task_default_queue": ("other", lambda app: message(app).queue),
    "task_queues": ([{"name": "celery", "max_priority": 5}],
                    lambda app: max_priorities(app.conf).get("celery")),
    "task_routes": ({"probe.echo": {"queue": "routed"}}, lambda app: message(app).queue),
    "task_create_missing_queues": (False, lambda app: (
        app.conf.update(task_routes={"probe.echo": "nowhere"}, task_queues=[{"name": "celery"}]),
        refused(lambda: message(app)))[1]),
    "task_default_priority": (7, lambda app: message(app).priority),
    "task_queue_max_priority": (10, lambda app: max_priorities(app.conf).get(None)),
    "task_acks_late": (True, lambda app: acks_late_of(app, message(app))),
    "task_reject_on_worker_lost": (True, lambda app: rejects_on_worker_lost(app, message(app))),
    "task_delivery_limit": (3, sort_out_a_fifth_delivery),
    "task_time_limit": (30, lambda app: time_limit_of(app, message(app))),
    "task_soft_time_limit": (20, lambda app: task(app, "soft_time_limit")),
    "task_default_retry_delay": (5, lambda app: task(app, "default_retry_delay")),
    "task_max_retries": (9, lambda app: task(app, "max_retries")),
    "task_always_eager": (True, lambda app: type(app.tasks["probe.echo"].delay(1)).__name__),
    "task_eager_propagates": (True, lambda app: (app.conf.update(task_always_eager=True),
                                                 eagerly_failing(app))[1]),
    "task_ignore_result": (True, lambda app: app.tasks["probe.echo"].delay(1).ignored),
    "task_allow_error_cb_on_chord_header": (True, lambda app: chord_header_errbacks(app)),
    "task_track_started": (True, lambda app: task(app, "track_started")),
    "task_compression": ("zlib", lambda app: message(app).options.get("compression")),
    "task_message_max_size": (5, lambda app: refused(lambda: message(app))),
    "task_annotations": ({"probe.echo": {"acks_late": True}},
                         lambda app: task(app, "acks_late")),
    "worker_concurrency": (3, lambda app: worker_options(app).concurrency),
    "worker_pool": ("threads", lambda app: worker_options(app).pool),
    "worker_processes": (0, lambda app: worker_options(app).processes),
    "worker_prefetch_multiplier": (1, lambda app: worker_options(app).prefetch_multiplier),
    "worker_max_tasks_per_child": (10, lambda app: worker_options(app).max_tasks_per_child),
    "worker_max_memory_per_child": (10_000,
                                    lambda app: worker_options(app).max_memory_per_child),
    "worker_log_format": ("W %(message)s", lambda app: logging_set_up(app)[0]),
    "worker_task_log_format": ("T %(task_name)s %(message)s",
                               lambda app: logging_set_up(app)[1]),
    "worker_hijack_root_logger": (False, lambda app: logging_set_up(app)[2]),
    "worker_send_task_events": (True, task_events_on),
    "worker_heartbeat": (0.5, heartbeat_every),
    "task_send_sent_event": (True, lambda app: (app.tasks["probe.echo"].delay(1),
                                                app.events.default().sent)[1]),
    "event_queue_ttl": (1.0, lambda app: app.events.Dispatcher().ttl),
    "event_queue_expires": (5.0, lambda app: app.events.Receiver().queue_expires),
    "beat_schedule": (SCHEDULE, entries),
    "beat_max_loop_interval": (5, lambda app: scheduler(app)[0]),
    "beat_lease_seconds": (20, lambda app: scheduler(app)[1]),
    "beat_catchup_limit": (7, lambda app: (app.conf.update(beat_schedule=SCHEDULE),
                                           entries(app))[1]),
    "beat_history_keep": (50, lambda app: scheduler(app)[2]),
    "task_default_queue_type": ("quorum", lambda app: queue_types(app.conf)[None]),
    "worker_loop_block_threshold": (0, loop_watchers),
    "worker_event_loop": ("asyncio", event_loop_module),
    "worker_gc_threshold": (5000, gc_threshold),
    "task_idempotency_window": (0.1, idempotency_window),
    "broker_failover_strategy": ("shuffle",
                                 lambda app: app._transport_options()["failover_strategy"]),
    "security_key": ("k.pem", lambda app: signing(app).key_path),
    "security_key_password": ("secret", lambda app: signing(app).key_password),
    "security_certificate": ("c.pem", lambda app: signing(app).cert_path),
    "security_cert_store": ("store/*.pem", lambda app: signing(app).store_path),
    "security_digest": ("sha512", lambda app: signing(app).digest_name),
    "imports": (["probe_imported_module"], lambda app: imported(app, "probe_imported_module")),
    "include": (["probe_included_module"], lambda app: imported(app, "probe_included_module")),
}


def test_every_setting_has_a_probe_or_says_it_is_not_acted_on():
    assert sorted(set(Settings.model_fields) - set(NOT_ACTED_ON) - set(PROBES)) == []
    assert sorted(set(PROBES) - set(Settings.model_fields)) == []


@pytest.mark.parametrize("name", sorted(PROBES))
def test_the_setting_changes_what_runner_does(name, tmp_path, monkeypatch):
    for module in ("probe_imported_module", "probe_included_module"):
        (tmp_path / f"{module}.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    value, probe = PROBES[name]
    default_app, changed_app = make_app(tmp_path, {}), make_app(tmp_path, {name: value})
    try:
        assert probe(default_app) != probe(changed_app)
    finally:
        default_app.close()
        changed_app.close()
