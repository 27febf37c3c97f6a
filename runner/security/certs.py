"""Keys and certificates for message signing, read with ``cryptography``.

A signer is named on the wire by its certificate's SHA-256 fingerprint (hex): unique, and
nothing an attacker can choose to collide with another certificate in the store. A worker
trusts exactly the certificates in its store (``security_cert_store``: a glob pattern, a
directory, or one file), and only while they are valid: an expired or not-yet-valid
certificate signs nothing the worker will run.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

from runner.exceptions import ImproperlyConfigured, SecurityError

DIGESTS = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512,
           "sha224": hashes.SHA224, "sha3_256": hashes.SHA3_256, "sha3_512": hashes.SHA3_512}


def digest_named(name: str) -> hashes.HashAlgorithm:
    """``security_digest`` as cryptography's hash (Celery's names: ``sha256``, ``sha512``...)."""
    key = name.lower().replace("-", "")
    if key not in DIGESTS:
        raise ImproperlyConfigured(f"security_digest {name!r} is not known; use one of "
                                   + ", ".join(sorted(DIGESTS)))
    return DIGESTS[key]()


def _read(path: str, setting: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ImproperlyConfigured(f"{setting}: cannot read {path!r}: {exc.strerror or exc}"
                                   ) from None


@dataclass(frozen=True)
class Certificate:
    """One X.509 certificate: who signs, and with which public key."""

    cert: x509.Certificate
    source: str

    @classmethod
    def load(cls, path: str, setting: str = "security_certificate") -> Certificate:
        data = _read(path, setting)
        try:
            return cls(x509.load_pem_x509_certificate(data), path)
        except ValueError as exc:
            raise ImproperlyConfigured(f"{setting}: {path!r} is not a PEM certificate: {exc}"
                                       ) from None

    @cached_property
    def id(self) -> str:
        return self.cert.fingerprint(hashes.SHA256()).hex()

    @cached_property
    def public_key(self) -> Any:
        return self.cert.public_key()

    @cached_property
    def valid_between(self) -> tuple[datetime, datetime]:
        return self.cert.not_valid_before_utc, self.cert.not_valid_after_utc

    def validity_problem(self, now: datetime | None = None) -> str | None:
        """Why this certificate cannot be trusted now (expired, not yet valid), or None."""
        now = now or datetime.now(UTC)
        start, end = self.valid_between
        if now > end:
            return f"certificate {self.subject} expired on {end:%Y-%m-%d %H:%M} UTC"
        if now < start:
            return f"certificate {self.subject} is not valid before {start:%Y-%m-%d %H:%M} UTC"
        return None

    @property
    def subject(self) -> str:
        return repr(self.cert.subject.rfc4514_string())

    def verify(self, data: bytes, signature: bytes, digest: hashes.HashAlgorithm) -> None:
        """Raise :class:`SecurityError` unless ``signature`` is this certificate's key's
        signature of ``data``."""
        problem = self.validity_problem()
        if problem:
            raise SecurityError(problem)
        key = self.public_key
        try:
            if isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, data, padding.PKCS1v15(), digest)
            elif isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, data, ec.ECDSA(digest))
            elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
                key.verify(signature, data)
            else:
                raise SecurityError(f"certificate {self.subject}: unsupported key type "
                                    f"{type(key).__name__}")
        except InvalidSignature:
            raise SecurityError(f"bad signature: the message was not signed by {self.subject} "
                                f"or was changed after signing") from None


class PrivateKey:
    """The signing key (``security_key``, optionally encrypted with ``security_key_password``)."""

    def __init__(self, path: str, password: str | bytes | None = None):
        data = _read(path, "security_key")
        if isinstance(password, str):
            password = password.encode()
        try:
            self.key: Any = serialization.load_pem_private_key(data, password=password)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ImproperlyConfigured(f"security_key: cannot load {path!r}: {exc} (a PEM "
                                       f"private key; security_key_password if encrypted)"
                                       ) from None
        self.source = path

    def sign(self, data: bytes, digest: hashes.HashAlgorithm) -> bytes:
        key = self.key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(digest))
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), digest)
        if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
            return key.sign(data)
        raise ImproperlyConfigured(f"security_key {self.source!r}: unsupported key type "
                                   f"{type(key).__name__} (use RSA, EC or Ed25519)")

    def matches(self, cert: Certificate) -> bool:
        fmt = serialization.PublicFormat.SubjectPublicKeyInfo
        enc = serialization.Encoding.DER
        return (self.key.public_key().public_bytes(enc, fmt)
                == cert.cert.public_key().public_bytes(enc, fmt))


class CertStore:
    """The certificates a worker trusts, by id. Expired ones are left out with a reason, so a
    message they signed is refused naming the expiry rather than 'unknown signer'."""

    def __init__(self, pattern: str):
        self.pattern = pattern
        self.certs: dict[str, Certificate] = {}
        self.unusable: dict[str, str] = {}
        paths = self._paths(pattern)
        if not paths:
            raise ImproperlyConfigured(f"security_cert_store: no certificate found at "
                                       f"{pattern!r} (a glob pattern, a directory or a file)")
        for path in paths:
            cert = Certificate.load(path, "security_cert_store")
            problem = cert.validity_problem()
            if problem:
                self.unusable[cert.id] = problem
            else:
                self.certs[cert.id] = cert

    @staticmethod
    def _paths(pattern: str) -> list[str]:
        if os.path.isdir(pattern):
            return sorted(p for ext in ("*.pem", "*.crt", "*.cert")
                          for p in glob.glob(os.path.join(pattern, ext)))
        return sorted(p for p in glob.glob(pattern) if os.path.isfile(p))

    def __getitem__(self, cert_id: str) -> Certificate:
        cert = self.certs.get(cert_id)
        if cert is None:
            why = self.unusable.get(cert_id)
            raise SecurityError(why or f"signer {cert_id[:16]}... is not in the certificate "
                                       f"store {self.pattern!r}")
        return cert
