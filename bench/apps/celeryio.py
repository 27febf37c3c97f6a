"""Celery's side of the I/O-bound row (issue 22), run with ``-P gevent -c 1000`` (Celery's
gevent pool patches ``time.sleep`` and sockets): each task waits 100 ms, by sleeping or by an
HTTP request to the bench's slow server (``BENCH_HTTP_URL``). Otherwise Celery's defaults."""

import os
import time

import httpx
from celery import Celery

app = Celery("celeryio", broker=os.environ["BENCH_BROKER_URL"],
             backend=os.environ["BENCH_RESULT_URL"])
LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=2000)
_client = None


@app.task
def noop(i):
    return i


@app.task
def sleep(i):
    time.sleep(0.1)
    return i


@app.task
def fetch(i):
    global _client
    if _client is None:
        _client = httpx.Client(limits=LIMITS, timeout=30)
    response = _client.get(os.environ["BENCH_HTTP_URL"])
    return i if response.status_code == 200 else -1
