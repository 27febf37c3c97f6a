"""The seed tutorial's tasks.py, with runner in place of Celery.

No broker is configured, so runner uses its embedded SQLite file .runner/runner.db in the
working directory: no server to install. For Redis, pass broker='redis://localhost:6379/0'.
"""

from runner import Celery

app = Celery("tasks")


@app.task
def add(x, y):
    return x + y


@app.task
def fail(message):
    raise ValueError(message)
