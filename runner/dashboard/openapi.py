"""The OpenAPI 3.1 description of ``/api`` (served at ``/api/openapi.json``). Query
parameters come from the same pydantic models that check them, so the spec cannot drift
from what the server accepts."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from runner.dashboard.filters import PoolChange, QueueName, RunFilter, SubmitForm, TaskFilter
from runner.version import __version__

ERROR = {"description": "A message saying what is wrong",
         "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
OK = {"description": "Done", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Ok"}}}}
JSON = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}


def _query(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    return [{"name": name, "in": "query", "required": False, "schema": prop,
             "description": prop.get("description", "")}
            for name, prop in schema["properties"].items()]


def _path(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in names]


def _get(summary: str, params: list | None = None, notfound: bool = False) -> dict:
    responses: dict[str, Any] = {"200": JSON, "400": ERROR, "401": ERROR}
    if notfound:
        responses["404"] = ERROR
    return {"get": {"summary": summary, "parameters": params or [], "responses": responses}}


def _post(summary: str, params: list, body: type[BaseModel] | None = None) -> dict:
    op: dict[str, Any] = {"summary": summary, "parameters": params,
                          "responses": {"200": OK, "400": ERROR, "401": ERROR, "403": ERROR,
                                        "404": ERROR, "409": ERROR}}
    if body is not None:
        op["requestBody"] = {"required": False, "content": {
            "application/json": {"schema": body.model_json_schema()}}}
    return {"post": op}


def spec() -> dict[str, Any]:
    paths = {
        "/api/overview": _get("Counts: workers online, tasks kept, events received"),
        "/api/workers": _get("Workers: status, heartbeat age, pool, active/processed/failed, "
                             "load, queues"),
        "/api/tasks": _get("Tasks, newest first, filtered", _query(TaskFilter)),
        "/api/tasks/{task_id}": _get("One task: arguments, result or exception and "
                                     "traceback, times, parent and children",
                                     _path("task_id"), True),
        "/api/tasks/{task_id}/{action}": _post(
            "revoke, terminate (kill the process running it) or apply (send again)",
            _path("task_id", "action")),
        "/api/workers/{hostname}/{action}": _post(
            "shutdown, pool_grow / pool_shrink (body: n), add_consumer / cancel_consumer "
            "(body: queue)", _path("hostname", "action"), QueueName),
        "/api/queues": _get("Queues: waiting, delayed, claimed, rates in/out, consumers, "
                            "the last hour's waiting counts"),
        "/api/runs": _get("Pipeline runs, newest first, filtered", _query(RunFilter)),
        "/api/runs/{run_id}": _get("One run: its steps (state, done/total, result or error, "
                                   "needs), params (secrets masked)", _path("run_id"), True),
        "/api/runs/{run_id}/dag.svg": {"get": {"summary": "The run's DAG as SVG",
                                               "parameters": _path("run_id"),
                                               "responses": {"200": {
                                                   "description": "image/svg+xml"},
                                                   "404": ERROR}}},
        "/api/runs/{run_id}/{action}": _post("retry or cancel the run",
                                             _path("run_id", "action")),
        "/api/pipelines": _get("The pipeline files of --pipelines, with their params"),
        "/api/pipelines/{name}": _get("One pipeline and its params", _path("name"), True),
        "/api/pipelines/{name}/runs": _post("Submit a run with params (text, converted by "
                                            "each param's type)", _path("name"), SubmitForm),
        "/api/triggers": _get("Beat entries and pipeline triggers: next and last fires, "
                              "the leader"),
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
            "200": {"description": "text/plain; version=0.0.4"}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "runner dashboard API", "version": __version__,
                 "description": "Every page's data and every action. POST needs an "
                                "Authorization header or an X-Requested-With header "
                                "(CSRF); with --auth/--token, every request needs "
                                "credentials."},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {"type": "object", "properties": {"error": {"type": "string"}},
                          "required": ["error"]},
                "Ok": {"type": "object", "properties": {"ok": {"type": "string"}}},
                "PoolChange": PoolChange.model_json_schema(),
            },
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"},
                                "bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
