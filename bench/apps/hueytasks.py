"""Huey's side of the benchmark: ``SqliteHuey`` with its defaults, results stored."""

import os

from huey import SqliteHuey

huey = SqliteHuey("bench", filename=os.environ["BENCH_DB"], results=True)


@huey.task()
def add(x, y):
    return x + y
