"""What the API and the pages share: reading a POST (JSON or a form, size-capped, CSRF
checked), answering an action (JSON for scripts, a redirect back for a browser), and turning
an :class:`HTTPProblem` into a 4xx."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote

from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from runner.dashboard.errors import HTTPProblem
from runner.dashboard.filters import NoBody, parse

logger = logging.getLogger("runner.dashboard")

MAX_BODY = 64 * 1024


def wants_json(request: Request) -> bool:
    """API answers are JSON, except to a browser's form (it shows the error page)."""
    return request.url.path.startswith("/api/") and not from_browser(request)


def from_browser(request: Request) -> bool:
    """A browser asks for HTML (a script such as curl sends ``*/*`` or JSON)."""
    return "text/html" in request.headers.get("accept", "")


FORM = "application/x-www-form-urlencoded"
#: what a browser's urlencoded form body is made of (anything else was typed by hand: curl's
#: ``-d '{"n": 2}'`` is sent with the form content type but is JSON)
_FORM_BODY = re.compile(rb"[A-Za-z0-9*\-._~+%=&]*")


def _json_body(body: bytes, kind: str) -> dict[str, Any]:
    try:
        fields = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        said = f" (it was sent as {kind.split(';')[0].strip()})" if kind else ""
        raise HTTPProblem(400, f"the body is neither JSON nor a form{said}: send a JSON "
                               f"object with Content-Type: application/json") from None
    if not isinstance(fields, dict):
        raise HTTPProblem(400, "the JSON body must be an object")
    return fields


async def read_post(request: Request) -> tuple[dict[str, Any], bool]:
    """(the fields of a POST, whether it came from a form); CSRF is checked here. A body
    sent as a form that is no form (curl ``-d`` sends JSON as a form) is read as JSON."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPProblem(413, f"request body over {MAX_BODY} bytes")
    kind = request.headers.get("content-type", "").lower()
    text = body.strip()
    if FORM in kind and _FORM_BODY.fullmatch(text):
        try:
            fields: dict[str, Any] = dict(parse_qsl(text.decode(), keep_blank_values=True,
                                                    max_num_fields=200, strict_parsing=bool(text)))
        except (ValueError, UnicodeDecodeError):
            raise HTTPProblem(400, "malformed form body (scripts: send a JSON object with "
                                   "Content-Type: application/json)") from None
        from_form = True
    elif not text:
        fields, from_form = {}, False
    else:
        fields, from_form = _json_body(text, kind), False
    security = request.app.state.security
    if not security.post_allowed(request, fields.get("csrf") if from_form else None):
        raise HTTPProblem(403, "CSRF check failed: reload the page and try again (scripts: "
                               "send an X-Requested-With header)")
    return fields, from_form


def safe_next(value: Any, default: str) -> str:
    """A redirect target on this site only."""
    text = str(value or "")
    return text if text.startswith("/") and not text.startswith("//") and "\\" not in text \
        else default


async def act(request: Request, work: Callable[[Any], Any], back: str,
              body: type[BaseModel] = NoBody,
              form: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Response:
    """Check the POST's fields as ``body`` (a 400 naming each bad one, nothing done), run
    ``work(checked)`` (blocking: in a thread); JSON ``{"ok": message}``, or for a browser's
    form a redirect to the page it came from with the message. ``form`` turns a form's
    fields into ``body``'s shape."""
    fields, from_form = await read_post(request)
    given = {k: v for k, v in fields.items() if k not in ("csrf", "next")} \
        if from_form else fields
    checked = parse(body, form(given) if from_form and form else given)
    message = await run_in_threadpool(work, checked)
    if from_form and from_browser(request):
        target = safe_next(fields.get("next"), back)
        sep = "&" if "?" in target else "?"
        return RedirectResponse(f"{target}{sep}msg={quote(str(message))}", status_code=303)
    return JSONResponse({"ok": message})


def problem_response(request: Request, exc: HTTPProblem) -> Response:
    if wants_json(request) or request.url.path == "/metrics":
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    pages = request.app.state.pages
    return pages.render(request, "error.html", {"status": exc.status, "message": exc.message},
                        status=exc.status)


async def on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPProblem)
    return problem_response(request, exc)


async def on_error(request: Request, exc: Exception) -> Response:
    """A bug: logged with its traceback here, a bare 500 there."""
    logger.exception("dashboard: %s %s failed", request.method, request.url.path)
    return JSONResponse({"error": "internal error (see the dashboard's log)"}, status_code=500)
