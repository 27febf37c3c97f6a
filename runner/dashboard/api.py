"""The JSON API under ``/api`` (described by ``/api/openapi.json``, see
:mod:`runner.dashboard.openapi`): what the pages show, and every action, for scripts."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runner.dashboard import actions, dag, runs, views
from runner.dashboard.errors import HTTPProblem
from runner.dashboard.filters import PoolChange, QueueName, RunFilter, SubmitForm, TaskFilter, parse
from runner.dashboard.http import act


def ctx_of(request: Request) -> Any:
    return request.app.state.ctx


def _get(build):
    """A GET route answering ``build(ctx, request)`` as JSON (blocking: in a thread)."""

    async def endpoint(request: Request) -> Response:
        value = await run_in_threadpool(build, ctx_of(request), request)
        return JSONResponse(value)

    return endpoint


def _dag_svg(request: Request) -> Response:
    run = runs.run(ctx_of(request), request.path_params["run_id"])
    return Response(dag.render(run["steps"], link="#step-"), media_type="image/svg+xml")


async def dag_svg(request: Request) -> Response:
    return await run_in_threadpool(_dag_svg, request)


async def task_action(request: Request) -> Response:
    ctx, task_id, action = ctx_of(request), request.path_params["task_id"], \
        request.path_params["action"]
    if action not in ("revoke", "terminate", "apply"):
        raise HTTPProblem(404, f"no task action {action!r} (revoke, terminate, apply)")

    def work(fields: dict) -> str:
        if action == "apply":
            return actions.apply_again(ctx, task_id)
        return actions.revoke(ctx, task_id, terminate=action == "terminate")

    return await act(request, work, f"/tasks/{task_id}")


async def worker_action(request: Request) -> Response:
    ctx, hostname, action = ctx_of(request), request.path_params["hostname"], \
        request.path_params["action"]

    def work(fields: dict) -> str:
        arguments: dict[str, Any] = {}
        if action in ("pool_grow", "pool_shrink"):
            arguments["n"] = parse(PoolChange, {k: v for k, v in fields.items()
                                                if k == "n"}).n
        elif action in ("add_consumer", "cancel_consumer"):
            arguments["queue"] = parse(QueueName, {k: v for k, v in fields.items()
                                                   if k == "queue"}).queue
        return actions.worker_action(ctx, hostname, action, **arguments)

    return await act(request, work, "/workers")


async def run_action(request: Request) -> Response:
    ctx, run_id, action = ctx_of(request), request.path_params["run_id"], \
        request.path_params["action"]
    if action not in ("retry", "cancel"):
        raise HTTPProblem(404, f"no run action {action!r} (retry, cancel)")
    return await act(request, lambda fields: actions.run_action(ctx, run_id, action),
                     f"/runs/{run_id}")


async def submit(request: Request) -> Response:
    ctx, name = ctx_of(request), request.path_params["name"]

    def work(fields: dict) -> str:
        if "params" in fields:  # JSON: {"params": {...}}
            given = parse(SubmitForm, {"params": fields["params"]}).params
        else:  # a form: param.NAME fields
            given = {k[len("param."):]: v for k, v in fields.items() if k.startswith("param.")}
        run_id = actions.submit(ctx, name, given)
        request.state.run_id = run_id
        return run_id

    response = await act(request, work, f"/pipelines/{name}")
    run_id = getattr(request.state, "run_id", None)
    if run_id and response.status_code == 303:  # a form: to the new run's page
        response.headers["location"] = f"/runs/{run_id}"
    elif run_id:
        return JSONResponse({"ok": f"run {run_id} submitted", "run_id": run_id})
    return response


async def openapi(request: Request) -> Response:
    from runner.dashboard.openapi import spec

    return JSONResponse(spec())


async def metrics(request: Request) -> Response:
    ctx = ctx_of(request)
    body = await run_in_threadpool(ctx.extra["metrics"].render)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


ROUTES = [
    Route("/api/overview", _get(lambda ctx, r: views.overview(ctx))),
    Route("/api/workers", _get(lambda ctx, r: {"workers": views.workers(ctx)})),
    Route("/api/tasks", _get(lambda ctx, r: views.tasks(ctx, parse(TaskFilter,
                                                                   r.query_params)))),
    Route("/api/tasks/{task_id}", _get(lambda ctx, r: views.task(ctx,
                                                                 r.path_params["task_id"]))),
    Route("/api/tasks/{task_id}/{action}", task_action, methods=["POST"]),
    Route("/api/workers/{hostname}/{action}", worker_action, methods=["POST"]),
    Route("/api/queues", _get(lambda ctx, r: {"queues": views.queues(ctx)})),
    Route("/api/runs", _get(lambda ctx, r: runs.runs(ctx, parse(RunFilter, r.query_params)))),
    Route("/api/runs/{run_id}", _get(lambda ctx, r: runs.run(ctx, r.path_params["run_id"]))),
    Route("/api/runs/{run_id}/dag.svg", dag_svg),
    Route("/api/runs/{run_id}/{action}", run_action, methods=["POST"]),
    Route("/api/pipelines", _get(lambda ctx, r: {"pipelines": runs.pipelines(ctx)})),
    Route("/api/pipelines/{name}", _get(lambda ctx, r: runs.pipeline(ctx,
                                                                     r.path_params["name"]))),
    Route("/api/pipelines/{name}/runs", submit, methods=["POST"]),
    Route("/api/triggers", _get(lambda ctx, r: runs.triggers(ctx))),
    Route("/api/openapi.json", openapi),
    Route("/metrics", metrics),
]
