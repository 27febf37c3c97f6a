"""runner's side of the I/O-bound row (issue 22): tasks that each wait 100 ms, as a coroutine
(for ``-P asyncio``) and as a plain function (for ``-P threads``), by sleeping or by an HTTP
request to the bench's slow server (``BENCH_HTTP_URL``, which answers after 100 ms).

Broker and backend: ``BENCH_BROKER_URL`` / ``BENCH_RESULT_URL`` (Redis).
"""

import asyncio
import os
import time

import httpx

from runner import Celery

app = Celery("iotasks", broker=os.environ.get("BENCH_BROKER_URL"),
             backend=os.environ.get("BENCH_RESULT_URL"))
WAIT = 0.1
LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=2000)
_clients: dict = {}  # one client per process and event loop (connections are reused)


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
    client = _clients.get(loop)
    if client is None:
        client = _clients[loop] = httpx.AsyncClient(limits=LIMITS, timeout=30)
    response = await client.get(os.environ["BENCH_HTTP_URL"])
    return i if response.status_code == 200 else -1


@app.task
def noop(i):
    return i


@app.task
def sleep(i):
    time.sleep(WAIT)
    return i


_client = None


@app.task
def fetch(i):
    global _client
    if _client is None:  # (thread-safe: one client for every thread of the process)
        _client = httpx.Client(limits=LIMITS, timeout=30)
    response = _client.get(os.environ["BENCH_HTTP_URL"])
    return i if response.status_code == 200 else -1
