"""Message signing (Celery's ``celery[auth]``): a real worker of ``tests/apps/signed_tasks.py``
runs what a trusted certificate signed, and refuses, logs, buries and never runs the rest:
unsigned, forged, tampered, signed by a stranger or an expired certificate, or replayed under
another task id. Keys and certificates are made by ``openssl`` in each test."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from runner import Celery
from runner.exceptions import ImproperlyConfigured, SecurityError

pytestmark = pytest.mark.transports("sqlite", "redis", "amqp")

CA_CONFIG = """[ca]
default_ca = d
[d]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}
serial = {dir}/serial
default_md = sha256
policy = p
[p]
commonName = supplied
"""


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """worker (RSA) and producer (EC) trusted; stranger not in the store; expired in the store
    but valid only in 2020."""
    d = tmp_path / "keys"
    (d / "store").mkdir(parents=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "worker.key", "-out",
            "worker.crt", "-days", "2", "-subj", "/CN=worker", cwd=d)
    for name in ("producer", "stranger"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
                "-subj", f"/CN={name}", cwd=d)
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "expired.key", "-out", "expired.csr", "-subj", "/CN=expired", cwd=d)
    (d / "ca").mkdir()
    (d / "ca" / "index.txt").write_text("")
    (d / "ca" / "serial").write_text("01\n")
    (d / "ca.cnf").write_text(CA_CONFIG.format(dir=d / "ca"))
    openssl("ca", "-batch", "-config", "ca.cnf", "-selfsign", "-keyfile", "expired.key", "-in",
            "expired.csr", "-out", "expired.crt", "-startdate", "20200101000000Z", "-enddate",
            "20200102000000Z", cwd=d)
    for name in ("worker", "producer", "expired"):
        (d / "store" / f"{name}.crt").write_bytes((d / f"{name}.crt").read_bytes())
    return d


def producer(broker_url: str, db_url: str, keys: Path, name: str = "producer", **settings):
    settings = {"task_serializer": "auth", "accept_content": ["auth"],
                "security_key": str(keys / f"{name}.key"),
                "security_certificate": str(keys / f"{name}.crt"),
                "security_cert_store": str(keys / "store"), **settings}
    return Celery("signed_tasks", broker=broker_url, backend=db_url, set_as_current=False,
                  **settings)


def signed_worker(start_worker, keys: Path, *args: str, **env: str):
    return start_worker("-c", "1", *args, app="signed_tasks",
                        env={"SIGNING_DIR": str(keys), **env})


def resign(wire: bytes, key: Path, cert: Path) -> bytes:
    """``wire``'s message signed again by ``key`` naming ``cert`` as signer (no validity check:
    how an attacker holding an expired key would sign)."""
    from runner.security.certs import Certificate, PrivateKey, digest_named

    data = wire.partition(b"\n")[2]
    signature = PrivateKey(str(key)).sign(data, digest_named("sha256"))
    head = {"signer": Certificate.load(str(cert)).id,
            "signature": base64.b64encode(signature).decode()}
    return b"\x00" + json.dumps(head).encode() + b"\n" + data


class Raw:
    """Bytes as they go to the broker, whatever they are."""

    def __init__(self, body: bytes, task_id: str):
        self.id, self.body = task_id, body
        self.queue, self.priority, self.eta = "celery", None, None

    def encode(self) -> bytes:
        return self.body


def test_a_signed_task_runs_and_what_it_starts_is_signed_by_the_worker(
        broker_url, db_url, keys, start_worker):
    app = producer(broker_url, db_url, keys)
    signed_worker(start_worker, keys)
    assert app.send_task("signed_tasks.add", (2, 3)).get(timeout=20) == 5
    # a chain: the worker sends the second step, signed with its own key
    from runner import chain, signature

    flow = chain(signature("signed_tasks.add", (1, 2), app=app),
                 signature("signed_tasks.add", (10,), app=app))
    assert flow.apply_async().get(timeout=20) == 13


def test_forged_tampered_unsigned_strangers_expired_and_replayed_messages_never_run(
        broker_url, db_url, keys, start_worker, tmp_path):
    app = producer(broker_url, db_url, keys)
    marks = tmp_path / "marks.txt"
    worker = signed_worker(start_worker, keys)
    broker = app.broker

    def wire(text: str, task_id: str | None = None) -> tuple[str, bytes]:
        message = app.build_message("signed_tasks.mark", (str(marks), text), task_id=task_id)
        return message.id, broker.wire(message)

    bad: dict[str, tuple[str, bytes]] = {}
    plain = Celery("signed_tasks", broker=broker_url, backend=db_url, set_as_current=False)
    unsigned = plain.build_message("signed_tasks.mark", (str(marks), "unsigned"))
    bad["unsigned"] = (unsigned.id, plain.broker.wire(unsigned))
    task_id, good = wire("tampered")
    bad["tampered"] = (task_id, good.replace(b'"tampered"', b'"tamperee"'))
    task_id, good = wire("forged")
    head, _, data = good[1:].partition(b"\n")
    block = json.loads(head)
    assert set(block) == {"session", "mac"}  # a producer with a store signs by session
    block["mac"] = base64.b64encode(b"\x30" * 32).decode()
    bad["forged"] = (task_id, b"\x00" + json.dumps(block).encode() + b"\n" + data)
    task_id, good = wire("stranger")
    bad["stranger"] = (task_id, resign(good, keys / "stranger.key", keys / "stranger.crt"))
    task_id, good = wire("expired")
    bad["expired"] = (task_id, resign(good, keys / "expired.key", keys / "expired.crt"))
    # a session of a producer whose certificate the worker does not trust
    stranger = producer(broker_url, db_url, keys, name="stranger")
    stranger.conf.update(security_cert_store=str(keys / "store" / "*.crt"))
    own = stranger.build_message("signed_tasks.mark", (str(marks), "stranger session"))
    bad["stranger session"] = (own.id, stranger.broker.wire(own))
    old_id, good = wire("replayed")
    new_id = str(uuid.uuid4())
    bad["replayed"] = (new_id, good.replace(old_id.encode(), new_id.encode()))
    plain.broker.enqueue([Raw(body, task_id) for task_id, body in bad.values()])
    # a good one after them: the worker is alive and runs it
    assert app.send_task("signed_tasks.mark", (str(marks), "good")).get(timeout=30) == "good"

    deadline = time.monotonic() + 30
    while broker.dead_letter_count() < len(bad) and time.monotonic() < deadline:
        time.sleep(0.1)
    letters = {letter.task_id: letter.reason for letter in broker.dead_letters(limit=100)}
    reasons = {label: letters.get(task_id, "") for label, (task_id, _body) in bad.items()}
    assert "unsigned message refused" in reasons["unsigned"]
    assert "bad signature" in reasons["tampered"]
    assert "bad signature" in reasons["forged"]
    assert "not in the certificate store" in reasons["stranger"]
    assert "not in the certificate store" in reasons["stranger session"]
    assert "expired on 2020-01-02" in reasons["expired"]
    assert "bad signature" in reasons["replayed"]
    assert marks.read_text().split() == ["good"]  # none of the bad ones ran
    log = worker.log()
    for task_id, _body in bad.values():
        assert f"[{task_id}] refused, not run: SecurityError" in log
        # nothing stored under its id: a forger cannot overwrite a real task's result
        assert app.AsyncResult(task_id).state == "PENDING"


def test_a_worker_without_its_key_or_store_does_not_start(db_url, keys, worker_env, tmp_path):
    (keys / "worker.key").unlink()
    env = {**worker_env, "SIGNING_DIR": str(keys)}
    done = subprocess.run([sys.executable, "-m", "runner", "worker", "-A", "signed_tasks",
                           "-c", "1"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0
    assert f"security_key: cannot read {str(keys / 'worker.key')!r}" in done.stderr
    assert "Traceback" not in done.stderr


def test_setup_security_as_celery(broker_url, db_url, keys):
    app = Celery("signed_tasks", broker=broker_url, backend=db_url, set_as_current=False)
    with pytest.raises(ImproperlyConfigured, match="task_serializer = 'auth'"):
        app.setup_security(key=str(keys / "producer.key"), cert=str(keys / "producer.crt"),
                           store=str(keys / "store"))
    app.conf.update(task_serializer="auth", accept_content=["auth"])
    with pytest.raises(ImproperlyConfigured, match="no certificate found"):
        app.setup_security(key=str(keys / "producer.key"), cert=str(keys / "producer.crt"),
                           store=str(keys / "nowhere" / "*.pem"))
    with pytest.raises(ImproperlyConfigured, match="is not the key of"):
        app.setup_security(key=str(keys / "producer.key"), cert=str(keys / "worker.crt"),
                           store=str(keys / "store"))
    app.setup_security(key=str(keys / "producer.key"), cert=str(keys / "producer.crt"),
                       store=str(keys / "store"))
    message = app.build_message("signed_tasks.add", (1, 2))
    assert app.broker.wire(message).startswith(b"\x00")
    assert app.security.cert_id()


@pytest.mark.transports("sqlite")
def test_signed_results(broker_url, db_url, keys, start_worker):
    app = producer(broker_url, db_url, keys, result_serializer="auth",
                   result_accept_content=["auth"])
    signed_worker(start_worker, keys, SIGNING_RESULTS="auth")
    result = app.send_task("signed_tasks.add", (20, 22))
    assert result.get(timeout=20) == 42
    record = app.backend.get(result.id)
    assert record.content_type == "application/data"
    # a stored value changed by someone with the database's password is refused when read
    import sqlite3

    path = db_url.removeprefix("sqlite:///")
    raw = base64.b64decode(record.payload).replace(b"42", b"43")
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE runner_results SET payload = ? WHERE task_id = ?",
                     (base64.b64encode(raw), result.id))
    fresh = app.AsyncResult(result.id)
    with pytest.raises(SecurityError, match="bad signature"):
        fresh.get(timeout=5)


@pytest.mark.transports("sqlite")
def test_messages_signed_one_by_one_and_sessions_not_sealed_for_the_worker(
        broker_url, db_url, keys, start_worker, tmp_path):
    """A producer without a store signs each message with its key (the worker checks each
    signature); one whose store lacks the worker's certificate makes sessions the worker cannot
    open, and the worker says so."""
    worker = signed_worker(start_worker, keys)
    alone = producer(broker_url, db_url, keys)
    alone.conf.update(security_cert_store=None)
    message = alone.build_message("signed_tasks.add", (1, 1))
    head = json.loads(alone.broker.wire(message)[1:].partition(b"\n")[0])
    assert set(head) == {"signer", "signature"}
    assert alone.send_task("signed_tasks.add", (4, 5)).get(timeout=20) == 9

    (tmp_path / "producer-only").mkdir()
    (tmp_path / "producer-only" / "producer.crt").write_bytes((keys / "producer.crt").read_bytes())
    narrow = producer(broker_url, db_url, keys, security_cert_store=str(tmp_path / "producer-only"))
    result = narrow.send_task("signed_tasks.add", (1, 2))
    deadline = time.monotonic() + 20
    while result.id not in worker.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    worker.wait_for_log(f"[{result.id}] refused, not run: SecurityError: the message's "
                        f"signing session was not sealed for this worker")
