import os

from runner import Celery

os.environ.setdefault("PROJ_SETTINGS", "proj.settings")

app = Celery("proj")

# Settings come from proj.settings; only names starting with CELERY_ count.
app.config_from_object(os.environ["PROJ_SETTINGS"], namespace="CELERY")

# Load tasks.py of each "installed app".
app.autodiscover_tasks(lambda: ["proj.orders", "proj.reports"])

from proj import signals  # noqa: E402,F401  (connects the receivers)


@app.task(bind=True, ignore_result=True)
def debug_task(self):
    print(f"Request: {self.request!r}")
