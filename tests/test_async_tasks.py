"""``async def`` tasks (#22): called eagerly, run by the prefork/threads/solo pools on a loop
of their own, and by ``-P asyncio``, one event loop running many at once, with retries, time
limits, revoke with terminate, signals and warm shutdown; plain tasks there run in threads."""

from __future__ import annotations

import signal
import time

import pytest

from tests.helpers import wait_for_state

pytestmark = pytest.mark.transports("sqlite", "redis", "amqp")

APP = "async_tasks"


@pytest.fixture
def atasks(app):
    import async_tasks

    return async_tasks


def test_async_task_registers_and_runs_eagerly(atasks, app):
    assert app.tasks["async_tasks.aadd"] is atasks.aadd
    assert atasks.aadd.apply((2, 3)).get() == 5
    own = atasks.aown_id.apply(task_id="eager-id")
    assert own.get() == "eager-id"
    failed = atasks.afail.apply(("no",))
    assert failed.failed() and isinstance(failed.result, ValueError)
    app.conf.task_always_eager = True
    assert atasks.aadd.delay(4, 5).get() == 9


def test_apply_from_running_event_loop(atasks):
    import asyncio

    async def caller():
        return atasks.aadd.apply((1, 1)).get()  # (a loop runs here: no nested run)

    assert asyncio.run(caller()) == 2


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_async_tasks_on_the_other_pools(atasks, start_worker, pool):
    start_worker("-P", pool, "-c", "2", app=APP)
    results = [atasks.aadd.delay(i, i, 0.01) for i in range(4)]
    own = atasks.aown_id.delay(0.01)
    failed = atasks.afail.delay("boom")
    assert [r.get(timeout=15) for r in results] == [0, 2, 4, 6]
    assert own.get(timeout=15) == own.id
    with pytest.raises(ValueError, match="boom"):
        failed.get(timeout=15)


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_soft_time_limit_reaches_the_coroutine_on_the_other_pools(atasks, start_worker, tmp_path,
                                                                  pool):
    start_worker("-P", pool, "-c", "1", app=APP)
    marker = tmp_path / "soft"
    # (at once: the 10 s sleep it awaits is interrupted, on every pool)
    assert atasks.asoft.delay(str(marker)).get(timeout=5) == "stopped in time"
    assert marker.read_text() == "cleaned up"
    assert atasks.aadd.delay(1, 1).get(timeout=10) == 2  # the thread's loop still works


def test_threads_pool_hard_time_limit_stops_an_awaiting_coroutine_at_once(atasks, start_worker,
                                                                         tmp_path):
    from runner.exceptions import TimeLimitExceeded

    start_worker("-P", "threads", "-c", "2", app=APP)
    marker = tmp_path / "hard"
    with pytest.raises(TimeLimitExceeded):
        atasks.ahard.delay(str(marker)).get(timeout=5)  # (its 10 s sleep cut at 0.5 s)
    assert marker.read_text() == "cancelled"  # its finally: ran
    assert atasks.aadd.delay(1, 2).get(timeout=10) == 3  # the thread and its loop go on
    blocking = atasks.ablocking_limited.delay(1.5)  # its loop blocked: nothing can cut in...
    with pytest.raises(TimeLimitExceeded):
        blocking.get(timeout=10)  # ...but it fails at its end, as a plain function would


def test_asyncio_pool_runs_many_at_once_each_with_its_own_request(atasks, start_worker):
    worker = start_worker("-P", "asyncio", "-c", "10", app=APP)
    assert "in flight x 1 process (asyncio, " in worker.log()
    seen = [atasks.ainflight.delay(0.5) for _ in range(20)]
    own = [atasks.aown_id.delay(0.05) for _ in range(20)]
    assert [r.get(timeout=20) for r in own] == [r.id for r in own]
    most = [r.get(timeout=20) for r in seen]
    assert max(most) > 1  # on one loop, side by side...
    assert max(most) <= 10  # ...but never more than -c
    assert atasks.aadd.delay(2, 2).get(timeout=10) == 4


def test_asyncio_pool_failure_and_retry(atasks, start_worker, tmp_path):
    start_worker("-P", "asyncio", "-c", "4", app=APP)
    marker = tmp_path / "attempts"
    flaky = atasks.aflaky.delay(str(marker), 2)
    failed = atasks.afail.delay("bad input")
    assert flaky.get(timeout=20) == 2
    assert marker.read_text().split() == ["0", "1", "2"]
    with pytest.raises(ValueError, match="bad input"):
        failed.get(timeout=10)
    assert failed.state == "FAILURE"


def test_asyncio_pool_time_limits(atasks, start_worker, tmp_path):
    from runner.exceptions import TimeLimitExceeded

    worker = start_worker("-P", "asyncio", "-c", "4", app=APP)
    soft_marker, hard_marker = tmp_path / "soft", tmp_path / "hard"
    soft = atasks.asoft.delay(str(soft_marker))
    hard = atasks.ahard.delay(str(hard_marker))
    assert soft.get(timeout=15) == "stopped in time"  # raised inside the coroutine: caught
    assert soft_marker.read_text() == "cleaned up"
    with pytest.raises(TimeLimitExceeded, match=r"^TimeLimitExceeded\(0\.5,\)$"):
        hard.get(timeout=15)
    assert hard_marker.read_text() == "cancelled"
    assert atasks.aadd.delay(1, 2).get(timeout=10) == 3  # the loop is fine afterwards
    assert "ahard" in worker.log()


def test_asyncio_pool_revoke_terminate_cancels(atasks, app, start_worker, tmp_path):
    start_worker("-P", "asyncio", "-c", "4", app=APP)
    marker = tmp_path / "long"
    long = atasks.along.delay(str(marker), 30)
    deadline = time.monotonic() + 15
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.read_text() == "started"
    long.revoke(terminate=True)
    wait_for_state(long, "REVOKED", timeout=15)
    assert marker.read_text() == "cancelled"


def test_asyncio_pool_plain_task_does_not_block_the_loop(atasks, start_worker, tmp_path):
    start_worker("-P", "asyncio", "-c", "4", app=APP)
    marker = tmp_path / "block"
    blocking = atasks.block.delay(str(marker), 3)
    deadline = time.monotonic() + 15
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert atasks.aadd.delay(1, 1).get(timeout=10) == 2
    assert not blocking.ready()  # the async task finished while the plain one still blocks
    assert blocking.get(timeout=15).startswith("runner-asyncio-sync")


def test_asyncio_pool_signals(atasks, start_worker, tmp_path):
    log = tmp_path / "signals.log"
    start_worker("-P", "asyncio", "-c", "4", app=APP, env={"ASYNC_SIGNAL_LOG": str(log)})
    result = atasks.aadd.delay(3, 4)
    assert result.get(timeout=10) == 7
    deadline = time.monotonic() + 10
    while (not log.exists() or len(log.read_text().splitlines()) < 2) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.read_text().splitlines() == [f"prerun async_tasks.aadd {result.id}",
                                            f"postrun async_tasks.aadd {result.id}"]


def test_asyncio_pool_warm_shutdown_waits_for_tasks_in_flight(atasks, start_worker, tmp_path):
    worker = start_worker("-P", "asyncio", "-c", "4", app=APP)
    marker = tmp_path / "long"
    long = atasks.along.delay(str(marker), 1.5)
    deadline = time.monotonic() + 15
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.signal(signal.SIGTERM)
    assert worker.proc.wait(20) == 0
    assert long.get(timeout=5) == "done"


@pytest.mark.transports("sqlite", "redis", "amqp")
def test_async_client_never_blocks_the_callers_loop(atasks, app, start_worker):
    import asyncio

    from tasks import add

    from runner.exceptions import TimeoutError as RunnerTimeout

    start_worker("-P", "asyncio", "-c", "10", app=APP)

    async def caller():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())
        slow = await atasks.aadd.adelay(2, 3, 1.0)
        assert not await slow.aready()
        value = await slow.aget(timeout=15)
        assert await slow.aready() and await slow.astate() == "SUCCESS"
        waited_ticks = ticks
        by_name = await app.asend_task("async_tasks.aadd", (1, 1))
        plain = await add.aapply_async((5, 5), countdown=0)
        failed = await atasks.afail.adelay("from the client")
        never = await atasks.aadd.adelay(0, 0, 1.5)  # (not done within 0.3 s)
        with pytest.raises(RunnerTimeout):
            await never.aget(timeout=0.3)
        with pytest.raises(ValueError, match="from the client"):
            await failed.aget(timeout=15)
        others = [await by_name.aget(timeout=15), await plain.aget(timeout=15)]
        ticking.cancel()
        return value, others, waited_ticks

    value, others, waited_ticks = asyncio.run(caller())
    assert value == 5 and others == [2, 10]
    assert waited_ticks > 20  # the caller's loop kept running while the task took 1 s


def test_asyncio_pool_names_a_task_that_blocks_the_loop(atasks, start_worker):
    worker = start_worker("-P", "asyncio", "-c", "4", app=APP,
                          env={"RUNNER_WORKER_LOOP_BLOCK_THRESHOLD": "0.3"})
    quick = atasks.aadd.delay(1, 1, 0.5)  # (not blocking: never named)
    blocking = atasks.ablocking.delay(1.5)
    assert blocking.get(timeout=15) == "woke" and quick.get(timeout=10) == 2
    worker.wait_for_log(f"Task async_tasks.ablocking[{blocking.id}] has blocked the event loop")
    reports = [line for line in worker.log().splitlines() if "has blocked the event" in line]
    assert reports and not any("async_tasks.aadd" in line for line in reports)


def test_example_calls_an_async_http_client_from_a_task(start_worker, worker_env, broker_url,
                                                        db_url):
    import asyncio
    import os
    import sys
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from pathlib import Path

    examples = Path(__file__).resolve().parent.parent / "examples"
    sys.path.insert(0, str(examples))
    try:
        import async_fetch
    finally:
        sys.path.remove(str(examples))

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"hello from {self.path}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    async_fetch.app.conf.update(broker_url=broker_url, result_backend=db_url)
    try:
        start_worker("-P", "asyncio", "-c", "20", app="async_fetch",
                     env={"PYTHONPATH": os.pathsep.join([str(examples),
                                                         worker_env["PYTHONPATH"]])})
        base = f"http://127.0.0.1:{server.server_address[1]}"

        async def caller():
            results = [await async_fetch.fetch.adelay(f"{base}/{i}") for i in range(5)]
            return [await r.aget(timeout=20) for r in results]

        got = asyncio.run(caller())
        assert got == [{"url": f"{base}/{i}", "status": 200, "bytes": len(f"hello from /{i}")}
                       for i in range(5)]
    finally:
        server.shutdown()
        async_fetch.app.close()


def test_asyncio_pool_acks_late_and_update_state(atasks, app, start_worker):
    worker = start_worker("-P", "asyncio", "-c", "4", app=APP)
    result = atasks.aprogress.delay(5)
    deadline = time.monotonic() + 15
    while result.state != "PROGRESS" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert result.state == "PROGRESS" and result.info["step"] >= 0
    while (result.state != "PROGRESS" or result.info["step"] < 1) \
            and time.monotonic() < deadline:  # (steps after the first: aupdate_state)
        time.sleep(0.02)
    assert result.state == "PROGRESS" and result.info["step"] >= 1
    assert result.get(timeout=15) == 5
    worker.stop()  # acked once it ran: nothing comes back to a new worker
    second = start_worker("-P", "asyncio", "-c", "4", app=APP)
    assert atasks.aadd.delay(1, 2).get(timeout=10) == 3
    assert app.broker.qsize("celery") == 0
    assert "async_tasks.aprogress[" not in second.log()  # (no "Received task: ...[id]")


def test_asyncio_pool_cold_shutdown_gives_tasks_back(atasks, start_worker, tmp_path):
    worker = start_worker("-P", "asyncio", "-c", "4", app=APP)
    marker = tmp_path / "long"
    long = atasks.along.delay(str(marker), 3)
    deadline = time.monotonic() + 15
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.signal(signal.SIGQUIT)  # cold: the coroutine is stopped, its message goes back
    worker.proc.wait(20)
    assert not long.ready()
    start_worker("-P", "asyncio", "-c", "4", app=APP)
    assert long.get(timeout=20) == "done"  # run again by the next worker, nothing lost


def test_asyncio_pool_plain_task_hard_time_limit(atasks, start_worker):
    from tasks import add, nap

    from runner.exceptions import TimeLimitExceeded

    worker = start_worker("-P", "asyncio", "-c", "4", app=APP)
    hard = [nap.apply_async((5,), time_limit=0.2) for _ in range(4)]
    for result in hard:
        with pytest.raises(TimeLimitExceeded):
            result.get(timeout=15)
    assert [add.delay(i, i).get(timeout=10) for i in range(4)] == [0, 2, 4, 6]
    assert atasks.aadd.delay(1, 1).get(timeout=10) == 2
    assert "Exception in thread" not in worker.log()


@pytest.mark.transports("redis")
def test_aget_wakes_on_the_result_announcement_rather_than_polling(atasks, app, start_worker):
    import asyncio

    start_worker("-P", "asyncio", "-c", "4", app=APP)
    assert atasks.aadd.delay(0, 0).get(timeout=15) == 0  # (the worker is up)
    redis = app.backend.client

    def reads() -> int:
        return redis.info("commandstats").get("cmdstat_get", {}).get("calls", 0)

    async def caller(wait: bool):
        result = await atasks.aadd.adelay(1, 2, 2.0)
        before = reads()
        if wait:
            value = await result.aget(timeout=15)
        else:  # the same time, only sleeping: what the worker reads meanwhile
            await asyncio.sleep(2.0)
            value = 3
        return value, reads() - before

    value, baseline = asyncio.run(caller(wait=False))
    value, gets = asyncio.run(caller(wait=True))
    assert value == 3
    # (looking every 0.1 s, as it did, read it about 25 times; the counts are the whole
    # server's, and tests running beside this one read too: 5 more were seen in a CI run)
    assert gets - baseline <= 12


def test_many_agets_at_once_on_one_loop(atasks, start_worker):
    import asyncio

    start_worker("-P", "asyncio", "-c", "50", app=APP)

    async def caller():
        sent = [await atasks.aadd.adelay(i, i, 0.5 + (i % 5) * 0.2) for i in range(50)]
        return await asyncio.gather(*(r.aget(timeout=30) for r in sent))

    assert asyncio.run(caller()) == [2 * i for i in range(50)]


def test_an_async_endpoint_enqueues_and_awaits_results(atasks, start_worker):
    """The README's FastAPI-style caller, on Starlette (what FastAPI is built on): requests
    served at once on one loop, each enqueueing a task and awaiting its result."""
    import asyncio

    import httpx

    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def add(request):
        result = await atasks.ainflight.adelay(0.5)  # (how many ran at once, seen by it)
        return JSONResponse({"id": result.id, "most": await result.aget(timeout=20)})

    api = Starlette(routes=[Route("/add", add, methods=["POST"])])
    start_worker("-P", "asyncio", "-c", "20", app=APP)

    async def callers():
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await asyncio.gather(*(client.post("/add") for _ in range(10)))

    responses = asyncio.run(callers())
    assert [r.status_code for r in responses] == [200] * 10
    assert max(r.json()["most"] for r in responses) > 1  # the requests' tasks overlapped
