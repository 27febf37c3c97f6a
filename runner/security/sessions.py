"""Signing sessions: one public-key signature per producer process, then an HMAC per message.

A public-key signature per message costs a producer 25-300 µs and a worker 20-90 µs (by key
type): more than the rest of a task's trip. So a signing process makes a *session*: a random
32-byte key K, sealed to each certificate in its store (RSA-OAEP, or ECDH + HKDF + AES-GCM for
EC keys), the whole token signed once with the process's private key. Every message then
carries the token and an HMAC-SHA256 of the message under K (about 1 µs). A worker checks a
token once (the signature against its store, its own entry unsealed with its own key) and keeps
K by token; each later message costs one HMAC.

What it keeps of per-message signing: only holders of a private key whose certificate is in the
store can read K or make a token, so a forger still needs a trusted key; any change to a
message breaks its HMAC; removing a producer's certificate from a worker's store refuses its
sessions (at the worker's next start). What it asks more: a worker's own certificate must be in
the producers' stores (usually one shared store); where that cannot be (or a key is Ed25519),
messages are signed one by one instead.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from runner.exceptions import SecurityError
from runner.security.certs import Certificate, CertStore, PrivateKey

SESSION_SECONDS = 3600.0  # a producer starts a new session (a new K) this often
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def can_seal_to(cert: Certificate) -> bool:
    return isinstance(cert.public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)


def _wrap_key(shared: bytes, sid: str) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"runner-session " + sid.encode()
                ).derive(shared)


def seal(key: bytes, cert: Certificate, sid: str) -> str:
    """``key`` readable only with ``cert``'s private key."""
    public = cert.public_key
    if isinstance(public, rsa.RSAPublicKey):
        return "rsa:" + base64.b64encode(public.encrypt(key, _OAEP)).decode()
    ephemeral = ec.generate_private_key(public.curve)
    wrap = _wrap_key(ephemeral.exchange(ec.ECDH(), public), sid)
    nonce = os.urandom(12)
    point = ephemeral.public_key().public_bytes(serialization.Encoding.X962,
                                                 serialization.PublicFormat.CompressedPoint)
    sealed = AESGCM(wrap).encrypt(nonce, key, sid.encode())
    return "ec:" + base64.b64encode(point + nonce + sealed).decode()


def unseal(sealed: str, private: PrivateKey, sid: str) -> bytes:
    kind, _, data = sealed.partition(":")
    raw = base64.b64decode(data, validate=True)
    key = private.key
    if kind == "rsa" and isinstance(key, rsa.RSAPrivateKey):
        return key.decrypt(raw, _OAEP)
    if kind == "ec" and isinstance(key, ec.EllipticCurvePrivateKey):
        size = (key.curve.key_size + 7) // 8 + 1
        point, nonce, ciphertext = raw[:size], raw[size:size + 12], raw[size + 12:]
        peer = ec.EllipticCurvePublicKey.from_encoded_point(key.curve, point)
        wrap = _wrap_key(key.exchange(ec.ECDH(), peer), sid)
        return AESGCM(wrap).decrypt(nonce, ciphertext, sid.encode())
    raise SecurityError(f"session key sealed as {kind!r}, which this worker's key cannot open")


@dataclass
class Session:
    """A producer's current session: its key and the signed token every message carries."""

    key: bytes
    token: str
    started: float
    pid: int  # a forked child starts its own (its parent's K stays the parent's)

    @classmethod
    def start(cls, private: PrivateKey, signer: Certificate, store: CertStore,
              digest: Any) -> Session:
        key, sid = os.urandom(32), os.urandom(16).hex()
        sealed = {cert_id: seal(key, cert, sid) for cert_id, cert in store.certs.items()}
        body = json.dumps({"v": 1, "sid": sid, "signer": signer.id, "keys": sealed},
                          separators=(",", ":")).encode()
        signature = private.sign(body, digest)
        token = (base64.b64encode(body) + b"." + base64.b64encode(signature)).decode()
        return cls(key, token, time.monotonic(), os.getpid())

    def stale(self) -> bool:
        return time.monotonic() - self.started > SESSION_SECONDS

    def mac(self, data: bytes) -> str:
        return base64.b64encode(hmac.digest(self.key, data, "sha256")).decode()


def open_token(token: str, store: CertStore, own: PrivateKey, own_id: str,
               digest: Any) -> bytes:
    """K of a session token, once its signature checks against ``store`` and it holds an
    entry for this worker's certificate ``own_id``; else :class:`SecurityError`."""
    try:
        body_b64, _, signature_b64 = token.partition(".")
        body = base64.b64decode(body_b64, validate=True)
        signature = base64.b64decode(signature_b64, validate=True)
        fields = json.loads(body)
        sid, signer, sealed = fields["sid"], fields["signer"], fields["keys"]
    except (ValueError, KeyError, TypeError):
        raise SecurityError("malformed signing session token") from None
    store[signer].verify(body, signature, digest)
    entry = sealed.get(own_id) if isinstance(sealed, dict) else None
    if not isinstance(entry, str):
        raise SecurityError("the message's signing session was not sealed for this worker: "
                            "add this worker's certificate to the producer's "
                            "security_cert_store")
    try:
        return unseal(entry, own, str(sid))
    except (ValueError, TypeError) as exc:
        raise SecurityError(f"cannot open the message's signing session: {exc}") from None


def check_mac(key: bytes, data: bytes, mac: str) -> None:
    expected = hmac.digest(key, data, "sha256")  # (one call into OpenSSL)
    try:
        given = base64.b64decode(mac, validate=True)
    except ValueError:
        given = b""
    if not hmac.compare_digest(expected, given):
        raise SecurityError("bad signature: the message was changed after signing (its "
                            "session HMAC does not match)")
