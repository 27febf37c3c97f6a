"""runner's side of the benchmark: the noop task, on the SQLite file named by BENCH_DB."""

import os

from runner import Celery

URL = f"sqlite:///{os.environ['BENCH_DB']}"  # an absolute path: sqlite:////tmp/.../runner.db

app = Celery("benchtasks", broker=URL, backend=URL)


@app.task
def add(x, y):
    return x + y
