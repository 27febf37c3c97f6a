"""Message signing, as Celery's ``celery[auth]``: settings, ``app.setup_security()``, and the
``auth`` serializer (see :mod:`runner.security.signing` for what is signed and why)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runner import serialization
from runner.exceptions import ImproperlyConfigured
from runner.security.signing import AUTH, AUTH_CONTENT_TYPE, Security

if TYPE_CHECKING:
    from runner.config.settings import Settings

__all__ = ["AUTH", "Security", "from_settings", "signing_wanted", "verifying_wanted",
           "task_accept", "install_result_serializer"]

SETTING_MISSING = ("message signing needs task_serializer = 'auth' and accept_content = "
                   "['auth']: there is no point in signing messages nobody checks")


def signing_wanted(conf: Settings) -> bool:
    """Messages this app sends are signed."""
    return conf.task_serializer == AUTH


def verifying_wanted(conf: Settings) -> bool:
    """A worker of this app runs only signed messages."""
    return AUTH in conf.accept_content


def from_settings(conf: Settings, **overrides: Any) -> Security | None:
    """The app's signing set-up from ``security_*`` settings (``overrides``: the arguments of
    ``setup_security``), or None where nothing asks for signing."""
    wanted = (signing_wanted(conf) or verifying_wanted(conf)
              or AUTH in (conf.result_serializer, *(conf.result_accept_content or ())))
    if not wanted and not overrides:
        return None
    allowed = tuple(overrides.get("allowed_serializers") or
                    [name for name in conf.accept_content if name != AUTH] or ["json"])
    return Security(
        key_path=overrides.get("key") or conf.security_key,
        cert_path=overrides.get("cert") or conf.security_certificate,
        store_path=overrides.get("store") or conf.security_cert_store,
        digest_name=overrides.get("digest") or conf.security_digest,
        key_password=overrides.get("key_password") or conf.security_key_password,
        serializer=overrides.get("serializer") or "json",
        allowed=allowed)


def task_accept(conf: Settings, security: Security | None) -> frozenset[str]:
    """The payload content types a worker decodes: with ``auth`` accepted, the serializers
    allowed inside a signature (the signature itself is checked before the payload)."""
    if security is not None and verifying_wanted(conf):
        return serialization.accept_set(security.allowed)
    return serialization.accept_set(conf.accept_content)


def install_result_serializer(security: Security) -> None:
    """Make ``auth`` results (``result_serializer = 'auth'``) sign and check with ``security``
    in this process (the serializer registry is per process, as Celery's)."""
    serialization.register(AUTH, AUTH_CONTENT_TYPE, security.dumps, security.loads)


def check_setup(conf: Settings) -> None:
    """Celery's ``setup_security`` check: signing without checking (or the reverse) is refused."""
    if conf.task_serializer != AUTH or list(conf.accept_content) != [AUTH]:
        raise ImproperlyConfigured(SETTING_MISSING)
