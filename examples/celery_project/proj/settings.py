import os

from runner.schedules import crontab

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "sqlite:///proj.db")
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND", CELERY_BROKER_URL)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "Europe/Oslo"
CELERY_TASK_ACKS_LATE = True
CELERY_BEAT_SCHEDULE = {
    "nightly-report": {
        "task": "proj.reports.tasks.build_report",
        "schedule": crontab(minute=0, hour=3),
        "args": (3,),
    },
    "heartbeat": {
        "task": "proj.orders.tasks.heartbeat",
        "schedule": float(os.environ.get("PROJ_HEARTBEAT_SECONDS", "60")),
    },
}
