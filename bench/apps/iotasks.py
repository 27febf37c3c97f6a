"""runner's side of the I/O-bound row (issue 22): tasks that each wait 100 ms, as a coroutine
(for ``-P asyncio``) and as a plain function (for ``-P threads``), by sleeping or by an HTTP
request to the bench's slow server (``BENCH_HTTP_URL``, which answers after 100 ms): aiohttp in
the coroutine, urllib3 (what requests uses) in the function, each with one pool of kept-alive
connections per process. (httpx was tried first: its connection pool costs grow with the
connections in it, and at 1,000 at once every system drained under 200 tasks/s.)

Broker and backend: ``BENCH_BROKER_URL`` / ``BENCH_RESULT_URL`` (Redis).
"""

import asyncio
import os
import time

import aiohttp
import urllib3

from runner import Celery

app = Celery("iotasks", broker=os.environ.get("BENCH_BROKER_URL"),
             backend=os.environ.get("BENCH_RESULT_URL"))
WAIT = 0.1
_sessions: dict = {}  # one session per process and event loop (connections are reused)


@app.task
async def anoop(i):
    return i


@app.task
async def asleep(i):
    await asyncio.sleep(WAIT)
    return i


@app.task
async def afetch(i):
    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None:
        session = _sessions[loop] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=30))
    async with session.get(os.environ["BENCH_HTTP_URL"]) as response:
        await response.read()
        return i if response.status == 200 else -1


@app.task
def noop(i):
    return i


@app.task
def sleep(i):
    time.sleep(WAIT)
    return i


_pool = urllib3.PoolManager(maxsize=1000, timeout=30)  # (thread-safe)


@app.task
def fetch(i):
    response = _pool.request("GET", os.environ["BENCH_HTTP_URL"])
    return i if response.status == 200 else -1
