"""Celery's side of the I/O-bound row (issue 22), run with ``-P gevent -c 1000`` (Celery's
gevent pool patches ``time.sleep`` and sockets): each task waits 100 ms, by sleeping or by an
HTTP request (urllib3) to the bench's slow server (``BENCH_HTTP_URL``). Otherwise Celery's
defaults."""

import os
import time

import urllib3
from celery import Celery

app = Celery("celeryio", broker=os.environ["BENCH_BROKER_URL"],
             backend=os.environ["BENCH_RESULT_URL"])
_pool = urllib3.PoolManager(maxsize=1000, timeout=30)  # (gevent patches its sockets)


@app.task
def noop(i):
    return i


@app.task
def sleep(i):
    time.sleep(0.1)
    return i


@app.task
def fetch(i):
    response = _pool.request("GET", os.environ["BENCH_HTTP_URL"])
    return i if response.status == 200 else -1
