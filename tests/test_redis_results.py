"""The Redis result backend as users see it: what a result holds, ``result_expires`` as the
key's TTL, and ``get()`` woken by the announcement of the result instead of polling."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis

from runner import Celery, states
from runner.backends.base import ResultRecord

pytestmark = pytest.mark.transports("redis")


@pytest.fixture
def store(db_url):
    client = redis.Redis.from_url(db_url)
    yield client
    client.close()


def test_success_and_failure_records_in_redis(app, start_worker, store):
    from tasks import add, boom

    start_worker("-c", "2")
    before = datetime.now(UTC)
    ok, failed = add.delay(2, 2), boom.delay("broken")
    assert ok.get(timeout=10) == 4
    assert (ok.state, ok.result, ok.traceback) == (states.SUCCESS, 4, None)
    assert before - timedelta(seconds=1) <= ok.date_done <= datetime.now(UTC)
    with pytest.raises(ValueError, match="broken"):
        failed.get(timeout=10)
    assert failed.state == states.FAILURE and isinstance(failed.result, ValueError)
    assert "ValueError: broken" in failed.traceback and failed.date_done >= ok.date_done - \
        timedelta(seconds=1)
    assert store.exists(f"runner:result:{ok.id}", f"runner:result:{failed.id}") == 2
    assert store.ttl(f"runner:result:{ok.id}") > 86_000  # Celery's default: one day


def test_result_expires_is_the_ttl_of_the_result_key(app, start_worker, store):
    from tasks import add

    start_worker(env={"RUNNER_RESULT_EXPIRES": "120"})
    result = add.delay(1, 2)
    assert result.get(timeout=10) == 3
    assert 115_000 <= store.pttl(f"runner:result:{result.id}") <= 120_000

    store.pexpire(f"runner:result:{result.id}", 50)  # Redis itself forgets it
    time.sleep(0.1)
    assert app.AsyncResult(result.id).state == states.PENDING


@pytest.mark.parametrize("expires", [None, 0])
def test_result_expires_none_or_0_keeps_results_forever(app, db_url, store, expires):
    keeper = Celery("keeper", broker=db_url, backend=db_url, set_as_current=False)
    keeper.conf.result_expires = expires
    try:
        keeper.backend.store([ResultRecord("kept", states.SUCCESS, "application/json", b"1")])
        assert store.ttl("runner:result:kept") == -1
        assert keeper.AsyncResult("kept").get(timeout=1) == 1
    finally:
        keeper.close()


def _commands(store) -> dict[str, int]:
    stats = store.info("commandstats")
    return {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}


def test_get_is_woken_by_the_announcement_not_by_polling(app, db_url, store):
    """A result stored 300 ms after ``get()`` began comes back within milliseconds, and the
    waiting costs a handful of Redis commands, not a poll loop."""
    writer = Celery("writer", broker=db_url, backend=db_url, set_as_current=False)
    result = app.AsyncResult("announced")
    app.backend.get("warm-up")  # connect first: the measure is the wait, not the handshake
    stored_at: list[float] = []

    def store_later() -> None:
        time.sleep(0.3)
        writer.backend.store([ResultRecord("announced", states.SUCCESS, "application/json",
                                           b'"hello"', date_done=time.time())])
        stored_at.append(time.monotonic())

    before = _commands(store)
    thread = threading.Thread(target=store_later)
    started = time.monotonic()
    thread.start()
    try:
        assert result.get(timeout=5) == "hello"
        returned = time.monotonic()
    finally:
        thread.join()
        writer.close()
    after = _commands(store)
    assert returned - started >= 0.29
    assert returned - stored_at[0] < 0.05, f"returned {returned - stored_at[0]:.3f}s late"
    reads = after.get("get", 0) - before.get("get", 0)
    assert reads <= 3, f"{reads} GETs while waiting: that is polling"
    assert after.get("subscribe", 0) > before.get("subscribe", 0)


def test_round_trip_through_a_worker_is_a_few_milliseconds(app, start_worker):
    from tasks import add

    start_worker("-c", "1")
    assert add.delay(0, 0).get(timeout=10) == 0  # warm
    times = []
    for i in range(20):
        began = time.perf_counter()
        assert add.delay(i, i).get(timeout=5) == 2 * i
        times.append(time.perf_counter() - began)
    times.sort()
    assert times[len(times) // 2] < 0.05, f"median round trip {times[len(times) // 2]:.4f}s"


def test_waits_leave_one_subscription_at_most(app, db_url, store):
    """Each ``get()`` leaves its channel subscribed until the next one unsubscribes it in its
    own write: twenty waits in a row leave one subscription, not twenty, and each still gets
    its own result (a late announcement of an earlier one is skipped)."""
    writer = Celery("writer", broker=db_url, backend=db_url, set_as_current=False)
    try:
        for i in range(20):
            writer.backend.store([ResultRecord(f"one-by-one-{i}", states.SUCCESS,
                                               "application/json", str(i).encode())])
            assert app.AsyncResult(f"one-by-one-{i}").get(timeout=5) == i
            # the same channel announced again after its wait: the next wait skips it
            store.publish(f"runner:done:one-by-one-{i}", b"SUCCESS")
        # (this test's channels only: other tests may wait on the same server meanwhile)
        assert store.pubsub_channels("runner:done:one-by-one-*") == [
            b"runner:done:one-by-one-19"]
    finally:
        writer.close()
    app.close()
    # the server drops a closed connection's subscriptions when it reads the close: soon, not
    # in the same instant on a loaded machine
    deadline = time.monotonic() + 5
    while store.pubsub_channels("runner:done:*") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.pubsub_channels("runner:done:*") == []
