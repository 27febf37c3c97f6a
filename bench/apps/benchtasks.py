"""runner's side of the benchmark: the noop task, and the tasks of ``benchpipeline.yaml``.

Broker and backend come from ``BENCH_BROKER_URL`` / ``BENCH_RESULT_URL`` (Redis, or an
``amqp://`` broker with Redis results), else both are the SQLite file named by ``BENCH_DB``.
"""

import os

from runner import Celery

SQLITE = f"sqlite:///{os.environ.get('BENCH_DB', 'bench.db')}"  # sqlite:////tmp/.../runner.db

app = Celery("benchtasks", broker=os.environ.get("BENCH_BROKER_URL", SQLITE),
             backend=os.environ.get("BENCH_RESULT_URL", SQLITE))
OPTIONS = {}  # the Sentinel and wait_for_replicas rows (issue 21)
if os.environ.get("BENCH_SENTINEL_MASTER"):
    OPTIONS["master_name"] = os.environ["BENCH_SENTINEL_MASTER"]
if os.environ.get("BENCH_WAIT_FOR_REPLICAS"):
    OPTIONS["wait_for_replicas"] = int(os.environ["BENCH_WAIT_FOR_REPLICAS"])
if OPTIONS:
    app.conf.update(broker_transport_options=OPTIONS, result_backend_transport_options=OPTIONS)
if os.environ.get("BENCH_SIGNING_DIR"):  # the signed row (issue 20): EC P-256, as the README
    KEYS = os.environ["BENCH_SIGNING_DIR"]
    app.conf.update(task_serializer="auth", accept_content=["auth"],
                    security_key=f"{KEYS}/bench.key", security_certificate=f"{KEYS}/bench.crt",
                    security_cert_store=f"{KEYS}/bench.crt")


@app.task
def add(x, y):
    return x + y


@app.task
def numbers(count):
    """The pipeline's first step: the items to map over."""
    return list(range(count))


@app.task
def double(x):
    """The mapped step: one task per item."""
    return 2 * x


@app.task
def collect(values):
    """The fan-in: every mapped result, in item order."""
    return sum(values)
