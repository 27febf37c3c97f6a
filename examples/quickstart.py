"""The seed tutorial, run start to finish: start a worker, call tasks, read results.

    python examples/quickstart.py

It does what you would do in two terminals: ``runner worker -A tasks --loglevel=info`` in one,
and the Python session below in the other. The worker is stopped at the end.
"""

import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
os.chdir(HERE)
sys.path.insert(0, HERE)

from tasks import add, app, fail  # noqa: E402

worker = subprocess.Popen([sys.executable, "-m", "runner", "worker", "-A", "tasks",
                           "--loglevel=info", "-c", "2"], cwd=HERE)
try:
    time.sleep(1.0)  # let the banner print first; tasks sent earlier would simply wait
    result = add.delay(4, 4)
    print(">>> result = add.delay(4, 4)")
    print(">>> result.ready()  ->", result.ready())
    print(">>> result.get(timeout=10)  ->", result.get(timeout=10))
    print(">>> result.ready()  ->", result.ready(), " state:", result.state)

    failed = fail.delay("something went wrong")
    print(">>> failed.get(propagate=False)  ->", repr(failed.get(timeout=10, propagate=False)))
    print(">>> failed.traceback:")
    print(failed.traceback)
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json",
                    timezone="Europe/Oslo", enable_utc=True)
    print(">>> app.conf.timezone  ->", app.conf.timezone)
finally:
    worker.terminate()
    worker.wait(30)
