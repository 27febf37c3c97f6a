"""The HTML pages, rendered on the server with jinja2 from the same views as the API. Each
page's changing part is a template of its own (``*_live.html``); the page's script asks for
it again (header ``X-Partial: 1``) every ``--refresh`` seconds and swaps it in."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from runner.dashboard import dag, runs, views
from runner.dashboard.auth import SESSION_COOKIE, SESSION_SECONDS
from runner.dashboard.filters import RunFilter, TaskFilter, parse
from runner.dashboard.http import read_post, safe_next
from runner.events.state import PRECEDENCE
from runner.pipeline.runs import RUN_STATES
from runner.version import __version__


def when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def ago(ts: float | None) -> str:
    if not ts:
        return "-"
    seconds = max(0.0, time.time() - ts)
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def took(start: float | None, end: float | None) -> str:
    return f"{end - start:.2f}s" if start and end else "-"


def sparkline(points: list[list[float]], width: int = 160, height: int = 28) -> str:
    """A queue's waiting count over the last hour, as a small SVG polyline."""
    if len(points) < 2:
        return ""
    first, last = points[0][0], points[-1][0]
    top = max(p[1] for p in points) or 1
    span = (last - first) or 1
    coords = " ".join(f"{(t - first) / span * width:.1f},{height - v / top * (height - 2):.1f}"
                      for t, v in points)
    return (f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} '
            f'{height}"><polyline fill="none" stroke="#2563eb" stroke-width="1.5" '
            f'points="{coords}"/></svg>')


class Pages:
    def __init__(self) -> None:
        self.env = jinja2.Environment(loader=jinja2.PackageLoader("runner.dashboard"),
                                      autoescape=True, undefined=jinja2.StrictUndefined)
        self.env.filters.update(when=when, ago=ago, took=took)
        self.env.globals.update(sparkline=sparkline, version=__version__)

    def render(self, request: Request, name: str, data: dict[str, Any],
               status: int = 200) -> Response:
        ctx = request.app.state.ctx
        security = request.app.state.security
        page = dict(data, request=request, csrf=security.csrf_token(request),
                    auth=security.enabled, refresh=ctx.options.refresh,
                    msg=request.query_params.get("msg"), hide_args=ctx.options.hide_args,
                    path=request.url.path,
                    overview=data.get("overview") or {})
        if request.headers.get("x-partial") and name.endswith(".html"):
            live = name.replace(".html", "_live.html")
            try:
                template = self.env.get_template(live)
            except jinja2.TemplateNotFound:
                template = self.env.get_template(name)
        else:
            template = self.env.get_template(name)
        return HTMLResponse(template.render(page), status_code=status)


def page(name: str, build):
    """A page route: ``build(ctx, request)`` (in a thread) gives the template's data."""

    async def endpoint(request: Request) -> Response:
        data = await run_in_threadpool(build, request.app.state.ctx, request)
        return request.app.state.pages.render(request, name, data)

    return endpoint


def _tasks(ctx, request: Request) -> dict[str, Any]:
    given = parse(TaskFilter, request.query_params)
    shown = views.tasks(ctx, given)
    partial = bool(request.headers.get("x-partial"))  # (the filter form is not in it)
    pages = {}
    for label, offset in (("newer", given.offset - given.limit),
                          ("older", given.offset + given.limit)):
        if offset < shown["total"] and (offset >= 0 or given.offset > 0):
            query = {k: v for k, v in request.query_params.items() if k != "offset"}
            pages[label] = "/tasks?" + urlencode({**query, "offset": max(0, offset)})
    return {"given": given.model_dump(), "found": shown, "states": PRECEDENCE, "pages": pages,
            "names": [] if partial else ctx.store.task_names(),
            "workers": [] if partial else [w.hostname for w, _f in ctx.store.workers()]}


def _run(ctx, request: Request) -> dict[str, Any]:
    run = runs.run(ctx, request.path_params["run_id"])
    return {"run": run, "svg": dag.render(run["steps"], link="#step-")}


def _runs(ctx, request: Request) -> dict[str, Any]:
    given = parse(RunFilter, request.query_params)
    return {"given": given.model_dump(), "found": runs.runs(ctx, given), "states": RUN_STATES,
            "pipelines": runs.pipelines(ctx)}


async def login(request: Request) -> Response:
    security = request.app.state.security
    pages = request.app.state.pages
    target = safe_next(request.query_params.get("next"), "/")
    if request.method == "GET":
        return pages.render(request, "login.html", {"next": target, "failed": False})
    fields, _ = await read_post(request)
    target = safe_next(fields.get("next"), "/")
    session = await run_in_threadpool(security.login, str(fields.get("user") or ""),
                                      str(fields.get("password") or ""),
                                      str(fields.get("token") or ""))
    if session is None:
        return pages.render(request, "login.html", {"next": target, "failed": True},
                            status=401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, security.session_id(session), max_age=SESSION_SECONDS,
                        httponly=True, samesite="strict")
    return response


async def logout(request: Request) -> Response:
    await read_post(request)
    request.app.state.security.logout(request)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


ROUTES = [
    Route("/", page("workers.html", lambda ctx, r: {"workers": views.workers(ctx),
                                                    "overview": views.overview(ctx)})),
    Route("/workers", page("workers.html", lambda ctx, r: {"workers": views.workers(ctx),
                                                           "overview": views.overview(ctx)})),
    Route("/tasks", page("tasks.html", _tasks)),
    Route("/tasks/{task_id}", page("task.html", lambda ctx, r: {
        "task": views.task(ctx, r.path_params["task_id"])})),
    Route("/queues", page("queues.html", lambda ctx, r: {"queues": views.queues(ctx)})),
    Route("/runs", page("runs.html", _runs)),
    Route("/runs/{run_id}", page("run.html", _run)),
    Route("/pipelines/{name}", page("pipeline.html", lambda ctx, r: {
        "pipeline": runs.pipeline(ctx, r.path_params["name"])})),
    Route("/triggers", page("triggers.html", lambda ctx, r: {"triggers": runs.triggers(ctx)})),
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
]
