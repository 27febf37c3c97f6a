"""Who may look and act: ``--auth user:password`` (kept only as a salted scrypt hash, checked
in constant time) and/or ``--token``; a browser logs in with a form and gets a session
cookie (HttpOnly, SameSite=Strict); scripts send ``Authorization: Basic`` or ``Bearer``.
The server never asks the browser for Basic credentials (no ``WWW-Authenticate``), so a
browser never sends them by itself.

CSRF: a POST is accepted when it carries an ``Authorization`` header, or a custom
``X-Requested-With`` header (a page of another site cannot send either without a CORS
preflight, which this server never approves), or the form field ``csrf`` equal to the
session's token (without auth: to the ``runner_csrf`` cookie, double submit).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

SESSION_COOKIE = "runner_session"
CSRF_COOKIE = "runner_csrf"
SESSION_SECONDS = 12 * 3600
PUBLIC = ("/login", "/static/", "/favicon.ico")
MAX_SESSIONS = 10000


def _scrypt(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=2 ** 14, r=8, p=1, dklen=32)


class Password:
    """A user and the scrypt hash of their password: the password itself is not kept."""

    def __init__(self, spec: str):
        user, sep, password = spec.partition(":")
        if not sep or not user or not password:
            raise ValueError("--auth must be USER:PASSWORD (both not empty)")
        self.user = user
        self.salt = secrets.token_bytes(16)
        self.digest = _scrypt(password, self.salt)

    def check(self, user: str, password: str) -> bool:
        same_user = hmac.compare_digest(user.encode(), self.user.encode())
        return hmac.compare_digest(_scrypt(password, self.salt), self.digest) and same_user


@dataclass
class Session:
    user: str
    csrf: str
    expires: float


class Security:
    def __init__(self, auth: str | None = None, token: str | None = None):
        self.password = Password(auth) if auth else None
        self.token = token or None
        self.sessions: dict[str, Session] = {}
        self.lock = threading.Lock()
        self._checked: dict[str, float] = {}  # sha256 of a good Basic header -> until when

    @property
    def enabled(self) -> bool:
        return self.password is not None or self.token is not None

    # -- credentials ------------------------------------------------------------------------

    def login(self, user: str, password: str, token: str) -> Session | None:
        if self.token and token and hmac.compare_digest(token.encode(), self.token.encode()):
            return self._new_session("token")
        if self.password and user and self.password.check(user, password):
            return self._new_session(user)
        return None

    def _new_session(self, user: str) -> Session:
        session = Session(user, secrets.token_urlsafe(24), time.time() + SESSION_SECONDS)
        with self.lock:
            if len(self.sessions) >= MAX_SESSIONS:
                self._expire()
            self.sessions[secrets.token_urlsafe(32)] = session
        return session

    def session_id(self, session: Session) -> str:
        with self.lock:
            return next(k for k, v in self.sessions.items() if v is session)

    def _expire(self) -> None:
        now = time.time()
        for key in [k for k, s in self.sessions.items() if s.expires < now]:
            del self.sessions[key]
        while len(self.sessions) >= MAX_SESSIONS:
            del self.sessions[next(iter(self.sessions))]

    def logout(self, request: Request) -> None:
        with self.lock:
            self.sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)

    def session(self, request: Request) -> Session | None:
        key = request.cookies.get(SESSION_COOKIE)
        if not key:
            return None
        with self.lock:
            found = self.sessions.get(key)
        return found if found is not None and found.expires > time.time() else None

    def header_ok(self, request: Request) -> bool | None:
        """True/False for a good/bad ``Authorization`` header; None when there is none."""
        header = request.headers.get("authorization")
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.token:
            return hmac.compare_digest(value.strip().encode(), self.token.encode())
        if scheme == "basic" and self.password:
            key = hashlib.sha256(header.encode()).hexdigest()
            if self._checked.get(key, 0) > time.time():
                return True
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            good = self.password.check(user, password)
            if good:
                if len(self._checked) > 1000:
                    self._checked.clear()
                self._checked[key] = time.time() + 300  # (scrypt is slow on purpose)
            return good
        return False

    # -- CSRF -------------------------------------------------------------------------------

    def csrf_token(self, request: Request) -> str:
        """The token a page puts in its forms."""
        session = self.session(request)
        if session is not None:
            return session.csrf
        return request.cookies.get(CSRF_COOKIE) or request.state.new_csrf

    def post_allowed(self, request: Request, form_token: str | None) -> bool:
        if request.headers.get("authorization") or request.headers.get("x-requested-with"):
            return True  # (a header: checked by the middleware, or not sendable cross-site)
        expected = self.csrf_token(request) if (self.session(request) or
                                                request.cookies.get(CSRF_COOKIE)) else None
        return bool(expected and form_token and hmac.compare_digest(expected.encode(),
                                                                    form_token.encode()))


class AuthMiddleware(BaseHTTPMiddleware):
    """Pages redirect to the login form, the API and /metrics answer 401; every response
    gets a CSRF cookie when it has none, and headers that keep it out of frames."""

    def __init__(self, app, security: Security):
        super().__init__(app)
        self.security = security

    async def dispatch(self, request: Request, call_next) -> Response:
        security = self.security
        request.state.new_csrf = secrets.token_urlsafe(24)
        path = request.url.path
        if security.enabled and not path.startswith(PUBLIC):
            by_header = security.header_ok(request)
            if by_header is False or (by_header is None and security.session(request) is None):
                if path.startswith(("/api/", "/metrics")) or request.method != "GET":
                    return JSONResponse({"error": "authentication required (log in, or send "
                                                  "Authorization: Bearer TOKEN / Basic)"},
                                        status_code=401)
                return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        response = await call_next(request)
        if CSRF_COOKIE not in request.cookies:
            response.set_cookie(CSRF_COOKIE, request.state.new_csrf, httponly=True,
                                samesite="strict")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response
