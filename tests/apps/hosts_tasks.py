"""Tasks of tests/test_hosts.py: workers on hosts made of network namespaces. The host a
process runs on is ``RUNNER_TEST_HOST``; marks go to ``HOSTS_MARKS`` (a file every namespace
sees: they share the filesystem). On Redis a host cut off gives its tasks back after the
visibility timeout, on RabbitMQ when the node misses its heartbeats (2 s here)."""

import os
import time

from runner import Celery

app = Celery("hosts_tasks")
app.conf.update(
    broker_transport_options={"visibility_timeout": 4, "heartbeat": 2},
    beat_schedule={"tick": {"task": "hosts_tasks.tick", "schedule": 1.0}},
    beat_lease_seconds=4,
)


def _mark(text: str) -> None:
    with open(os.environ["HOSTS_MARKS"], "a") as f:
        f.write(f"{text}\n")


@app.task(acks_late=True)
def work(i, seconds):
    host = os.environ.get("RUNNER_TEST_HOST", "?")
    _mark(f"start {i} {host}")
    time.sleep(seconds)
    _mark(f"end {i} {host}")
    return i


@app.task(bind=True)
def tick(self):
    _mark(f"tick {self.request.id} {os.environ.get('RUNNER_TEST_HOST', '?')}")
