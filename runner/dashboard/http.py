"""What the API and the pages share: reading a POST (JSON or a form, size-capped, CSRF
checked), answering an action (JSON for scripts, a redirect back for a form), and turning
an :class:`HTTPProblem` into a 4xx."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from runner.dashboard.errors import HTTPProblem

logger = logging.getLogger("runner.dashboard")

MAX_BODY = 64 * 1024


def wants_json(request: Request) -> bool:
    """API answers are JSON, except to a browser's form (it shows the error page)."""
    return request.url.path.startswith("/api/") and \
        "text/html" not in request.headers.get("accept", "")


async def read_post(request: Request) -> tuple[dict[str, Any], bool]:
    """(the fields of a POST, whether it came from a form); CSRF is checked here."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPProblem(413, f"request body over {MAX_BODY} bytes")
    kind = request.headers.get("content-type", "")
    if "application/x-www-form-urlencoded" in kind:
        try:
            fields: dict[str, Any] = dict(parse_qsl(body.decode(), keep_blank_values=True,
                                                    max_num_fields=200))
        except (ValueError, UnicodeDecodeError):
            raise HTTPProblem(400, "malformed form body") from None
        from_form = True
    elif not body.strip():
        fields, from_form = {}, False
    else:
        try:
            fields = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise HTTPProblem(400, "the body is not JSON (send application/json, or a "
                                   "form)") from None
        if not isinstance(fields, dict):
            raise HTTPProblem(400, "the JSON body must be an object")
        from_form = False
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


async def act(request: Request, work: Callable[[dict[str, Any]], Any], back: str) -> Response:
    """Run ``work(fields)`` (blocking: in a thread) for a POST; JSON ``{"ok": message}`` or
    a redirect to the page it came from with the message."""
    fields, from_form = await read_post(request)
    message = await run_in_threadpool(work, fields)
    if from_form:
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
