"""Celery's side of the benchmark: kombu's SQLAlchemy transport and the database result
backend, both on SQLite files (no server), otherwise Celery's defaults."""

import os

from celery import Celery

app = Celery("celerytasks",
             broker=f"sqla+sqlite:///{os.environ['BENCH_DB']}",
             backend=f"db+sqlite:///{os.environ['BENCH_RESULTS_DB']}")


@app.task
def add(x, y):
    return x + y
