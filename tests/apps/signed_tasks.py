"""An app whose messages are signed (Celery's ``celery[auth]`` set-up), for
tests/test_signing.py: the key, certificate and store come from ``SIGNING_DIR``."""

import os
from pathlib import Path

from runner import Celery

SIGNING_DIR = Path(os.environ.get("SIGNING_DIR", "."))

app = Celery("signed_tasks")
app.conf.update(
    task_serializer="auth", accept_content=["auth"],
    result_serializer=os.environ.get("SIGNING_RESULTS", "json"),
    security_key=str(SIGNING_DIR / "worker.key"),
    security_certificate=str(SIGNING_DIR / "worker.crt"),
    security_cert_store=str(SIGNING_DIR / "store" / "*.crt"),
)


@app.task
def add(x, y):
    return x + y


@app.task
def mark(path, text):
    """Proof a message ran: a line in ``path``."""
    with open(path, "a") as file:
        file.write(text + "\n")
    return text
