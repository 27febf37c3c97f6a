"""Celery's side of the benchmark, otherwise Celery's defaults.

On Redis: ``BENCH_BROKER_URL`` / ``BENCH_RESULT_URL`` (``redis://``); on AMQP the broker URL is
``amqp://`` (kombu's py-amqp transport) and the results stay on ``redis://``. On SQLite (no
server): kombu's SQLAlchemy transport on ``BENCH_DB`` and the database result backend on
``BENCH_RESULTS_DB``.
"""

import os

from celery import Celery

if "BENCH_BROKER_URL" in os.environ:
    app = Celery("celerytasks", broker=os.environ["BENCH_BROKER_URL"],
                 backend=os.environ["BENCH_RESULT_URL"])
else:
    app = Celery("celerytasks",
                 broker=f"sqla+sqlite:///{os.environ['BENCH_DB']}",
                 backend=f"db+sqlite:///{os.environ['BENCH_RESULTS_DB']}")


@app.task
def add(x, y):
    return x + y
