"""Message signing: what a worker checks before it runs anything.

Threat: whoever can write to the broker (a leaked password, a shared Redis) could make every
worker run any registered task with any arguments. With ``task_serializer = 'auth'`` every
message a producer or worker sends is signed with ``security_key``; with ``accept_content =
['auth']`` a worker runs only messages signed by a certificate in ``security_cert_store``.

What is signed: the whole message as it goes on the wire, envelope and payload: task id, task
name, arguments, eta, expiry, links, chains and chords, headers. So a signed message cannot be
sent again under another id, point its link to another task, or run another task with the
same arguments: each is a bad signature. (Celery signs the body only.) What signing does not
do: hide the arguments (they are readable by whoever reads the broker), or stop the same
signed message being sent twice (it runs under the same id, at least once, as any message).

How: see runner.security.sessions (one public-key signature per producer process and hour,
an HMAC per message); without a store, a public-key signature per message.

Results may be signed too (``result_serializer = 'auth'``): the stored value is signed as
Celery's auth serializer does it, and a client reading it checks the signature.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runner import serialization
from runner.exceptions import ImproperlyConfigured, SecurityError
from runner.message import Message

if TYPE_CHECKING:  # (cryptography is imported when signing is first used: runner[auth])
    from runner.security.certs import Certificate, CertStore, PrivateKey

AUTH = "auth"
OPENED_SESSIONS = 10_000  # session keys a worker keeps (one per producer process and hour)
AUTH_CONTENT_TYPE = "application/data"  # Celery's, for the auth serializer
_SEP = b"\x00\x01"

SETUP_HELP = ("set security_key, security_certificate and security_cert_store (see the "
              "README's Security section)")


@dataclass
class Security:
    """One app's signing set-up: read lazily (a producer needs the key and certificate, a
    worker the store too), each file named in the error when it cannot be read."""

    key_path: str | None
    cert_path: str | None
    store_path: str | None
    digest_name: str = "sha256"
    key_password: str | bytes | None = None
    serializer: str = "json"  # what is inside the signature (Celery's setup_security arg)
    allowed: tuple[str, ...] = ("json",)
    sessions: bool = True  # sign by session where the store allows (see runner.security.sessions)
    _key: PrivateKey | None = field(default=None, repr=False)
    _cert: Certificate | None = field(default=None, repr=False)
    _store: CertStore | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        serialization.content_type_of(self.serializer)  # a known inner serializer
        self._digest: Any = None
        self._current: Any = None  # this process's signing session
        self._opened: dict[str, bytes] = {}  # session token -> its key, checked

    @property
    def digest(self) -> Any:
        if self._digest is None:
            self._digest = _certs().digest_named(self.digest_name)
        return self._digest

    # -- the parts, read on first use -------------------------------------------------------

    def key(self) -> PrivateKey:
        if self._key is None:
            if not self.key_path or not self.cert_path:
                raise ImproperlyConfigured(f"message signing (task_serializer='auth') needs a "
                                           f"key and a certificate: {SETUP_HELP}")
            certs = _certs()
            key = certs.PrivateKey(self.key_path, self.key_password)
            cert = certs.Certificate.load(self.cert_path)
            if not key.matches(cert):
                raise ImproperlyConfigured(f"security_key {self.key_path!r} is not the key of "
                                           f"security_certificate {self.cert_path!r}")
            problem = cert.validity_problem()
            if problem:
                raise ImproperlyConfigured(f"security_certificate {self.cert_path!r}: {problem}")
            self._key, self._cert = key, cert
        return self._key

    def cert_id(self) -> str:
        self.key()
        assert self._cert is not None
        return self._cert.id

    def store(self) -> CertStore:
        if self._store is None:
            if not self.store_path:
                raise ImproperlyConfigured(f"checking signatures (accept_content=['auth']) "
                                           f"needs security_cert_store: {SETUP_HELP}")
            self._store = _certs().CertStore(self.store_path)
        return self._store

    def check(self, signing: bool, verifying: bool) -> None:
        """Read now what a process will need (a worker at start-up), so a missing file is one
        clear error before anything runs."""
        if signing:
            self.key()
        if verifying:
            self.store()

    # -- task messages: the wire --------------------------------------------------------------

    def sign(self, wire: bytes) -> bytes:
        """The signed form of an encoded message: b"\\0" + the signature block (JSON) +
        b"\\n" + the message (see :class:`runner.message.Signed`). Within a session (see
        runner.security.sessions) an HMAC; else a public-key signature of its own."""
        session = self._session()
        if session is not None:
            block = {"session": session.token, "mac": session.mac(wire)}
        else:
            signature = self.key().sign(wire, self.digest)
            block = {"signer": self.cert_id(),
                     "signature": base64.b64encode(signature).decode()}
        return b"\x00" + json.dumps(block, separators=(",", ":")).encode() + b"\n" + wire

    def _session(self) -> Any:
        """This process's signing session, started (again) when none is current; None where
        messages are signed one by one (no store to seal to, or a key that cannot be sealed
        to: Ed25519)."""
        session = self._current
        if session is None or session.stale() or session.pid != os.getpid():
            session = None
            if self.store_path and self.sessions:
                sessions, store = _sessions(), self.store()
                if store.certs and all(map(sessions.can_seal_to, store.certs.values())):
                    self.key()
                    session = sessions.Session.start(self._key, self._cert, store, self.digest)
            self._current = session
        return session

    def verify(self, message: Message) -> None:
        """Raise :class:`SecurityError` unless ``message`` was signed, as it is, by a trusted
        certificate."""
        signed = message.signed
        if signed is None:
            raise SecurityError("unsigned message refused: this worker runs only signed "
                                "messages (accept_content=['auth'])")
        block = signed.block
        if "session" in block:
            token = block["session"]
            key = self._opened.get(token)
            if key is None:
                key = self._open(token)
            _sessions().check_mac(key, signed.data, block["mac"])
            return
        try:
            signature = base64.b64decode(block["signature"], validate=True)
        except ValueError:
            raise SecurityError("malformed signature") from None
        self.store()[block["signer"]].verify(signed.data, signature, self.digest)

    def _open(self, token: str) -> bytes:
        self.key()
        assert self._key is not None and self._cert is not None
        key = _sessions().open_token(token, self.store(), self._key, self._cert.id,
                                     self.digest)
        if len(self._opened) >= OPENED_SESSIONS:
            self._opened.clear()
        self._opened[token] = key
        return key

    # -- results: Celery's auth serializer --------------------------------------------------

    def dumps(self, value: Any) -> bytes:
        _content_type, body = serialization.dumps(value, self.serializer)
        signature = self.key().sign(body, self.digest)
        inner = serialization.content_type_of(self.serializer)
        return base64.b64encode(_SEP.join([
            base64.b64encode(self.cert_id().encode()), base64.b64encode(signature),
            inner.encode(), b"utf-8", body]))

    def loads(self, payload: bytes) -> Any:
        try:
            signer, signature, content_type, _encoding, body = base64.b64decode(
                payload).split(_SEP, 4)
            signer_id = base64.b64decode(signer).decode()
            signature = base64.b64decode(signature)
        except ValueError:
            raise SecurityError("malformed signed value") from None
        self.store()[signer_id].verify(body, signature, self.digest)
        accept = serialization.accept_set(self.allowed)
        return serialization.loads(body, content_type.decode(), accept)



_modules: dict[str, Any] = {}  # the cryptography-backed modules, once imported


def _sessions() -> Any:
    found = _modules.get("sessions")
    if found is None:
        _certs()  # (the same import error, said the same way)
        from runner.security import sessions

        found = _modules["sessions"] = sessions
    return found


def _certs() -> Any:
    found = _modules.get("certs")
    if found is None:
        try:
            from runner.security import certs
        except ImportError as exc:
            raise ImproperlyConfigured(f"message signing needs the cryptography package: "
                                       f"pip install 'runner[auth]' ({exc})") from None
        found = _modules["certs"] = certs
    return found
