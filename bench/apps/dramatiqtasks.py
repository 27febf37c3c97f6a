"""Dramatiq's side of the benchmark: its Redis broker and the Results middleware with its Redis
backend (``BENCH_BROKER_URL`` / ``BENCH_RESULT_URL``), otherwise Dramatiq's defaults."""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

broker = RedisBroker(url=os.environ["BENCH_BROKER_URL"])
broker.add_middleware(Results(backend=RedisBackend(url=os.environ["BENCH_RESULT_URL"])))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True)
def add(x, y):
    return x + y
