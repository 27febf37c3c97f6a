"""The fed prefork pool (a broker living in the worker's process, ``memory://``): the main
process sends batches to its children and gets their results back; children are recycled
after ``max_tasks_per_child`` and a killed one is replaced, with its task failed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent('''
    import json, os, signal, threading, time
    from runner import Celery
    from runner.worker.prefork_fed import FedPool
    from runner.worker.held import WorkerOptions
    from runner.worker.worker import Worker

    app = Celery("fed", broker="memory://fed", backend="memory://", set_as_current=False)

    @app.task
    def pid(x):
        return [x, os.getpid()]

    @app.task
    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    results = [pid.delay(i) for i in range(6)]
    dead = die.delay()
    worker = Worker(app, WorkerOptions(concurrency=2, pool="prefork", queues=["celery"],
                                       hostname="fed@test", prefetch_multiplier=1,
                                       max_tasks_per_child=2))
    out = {"pool": type(worker.pool).__name__}

    def wait_then_stop():
        try:
            out["values"] = [r.get(timeout=30) for r in results]
            try:
                dead.get(timeout=30)
            except Exception as exc:
                out["dead"] = [dead.state, type(exc).__name__]
        finally:
            worker.stop()

    threading.Thread(target=wait_then_stop, daemon=True).start()
    worker.run(install_signals=False)
    print(json.dumps(out))
''')


def test_fed_children_run_batches_are_recycled_and_replaced(tmp_path: Path):
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, capture_output=True,
                          text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["pool"] == "FedPool"
    values = out["values"]
    assert [x for x, _ in values] == list(range(6))
    pids = {p for _, p in values}
    assert len(pids) >= 3  # 2 children, each replaced after its 2 tasks
    assert out["dead"] == ["FAILURE", "WorkerLostError"]
