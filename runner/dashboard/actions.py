"""What the buttons do, through the same library calls as the CLI: ``app.control`` for tasks
and workers, :mod:`runner.pipeline.control` for runs, ``engine.submit`` for new runs. Each
returns a short message for the user; a refusal is an :class:`HTTPProblem` (409 when the
thing is in the wrong state, 404 when it is not there)."""

from __future__ import annotations

import ast
from typing import Any

from runner.dashboard import runs as run_views
from runner.dashboard.context import Context
from runner.dashboard.errors import HTTPProblem, not_found
from runner.exceptions import PipelineError, RunnerError

WORKER_ACTIONS = ("shutdown", "pool_grow", "pool_shrink", "add_consumer", "cancel_consumer")


def revoke(ctx: Context, task_id: str, terminate: bool = False) -> str:
    ctx.app.control.revoke(task_id, terminate=terminate, signal="SIGTERM")
    return f"task {task_id}: {'terminate' if terminate else 'revoke'} sent to the workers"


def _literal(text: str | None, what: str, empty: Any) -> Any:
    if text is None:
        return empty
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise HTTPProblem(409, f"the task's {what} ({text[:80]}) are not known in full "
                               f"(cut or hidden in its events): it cannot be applied "
                               f"again from here") from None


def apply_again(ctx: Context, task_id: str) -> str:
    """Send a task of the same name with the same arguments (as its events showed them)."""
    found, _children = ctx.store.task(task_id)
    if found is None:
        raise not_found(f"no task {task_id!r}")
    if not found.name:
        raise HTTPProblem(409, f"task {task_id}: its name is not known yet")
    if "***" in (found.args or "") + (found.kwargs or ""):
        raise HTTPProblem(409, f"task {task_id}: its arguments are hidden; it cannot be "
                               f"applied again from here")
    args = _literal(found.args, "args", [])
    kwargs = _literal(found.kwargs, "kwargs", {})
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        raise HTTPProblem(409, f"task {task_id}: its arguments are not a list and a dict")
    options = {"queue": found.queue} if getattr(found, "queue", None) else {}
    sent = ctx.app.send_task(found.name, list(args), kwargs, **options)
    return f"sent {found.name} again as task {sent.id}"


def worker_action(ctx: Context, hostname: str, action: str, **arguments: Any) -> str:
    if action not in WORKER_ACTIONS:
        raise not_found(f"no worker action {action!r}; there are: {', '.join(WORKER_ACTIONS)}")
    known = {w.hostname for w, _failed in ctx.store.workers()}
    if hostname not in known:
        raise not_found(f"no worker {hostname!r} seen")
    control = ctx.app.control
    if action == "shutdown":
        control.shutdown(destination=[hostname])
        ctx.poller.kick()
        return f"{hostname}: shutdown sent"
    call = getattr(control, action)
    if action in ("pool_grow", "pool_shrink"):
        replies = call(arguments["n"], destination=[hostname], reply=True, timeout=2.0)
    else:
        replies = call(arguments["queue"], destination=[hostname], reply=True, timeout=2.0)
    ctx.poller.kick()
    answer = next((r[hostname] for r in replies or [] if hostname in r), None)
    if answer is None:
        raise HTTPProblem(504, f"{hostname} did not answer {action} within 2s")
    if isinstance(answer, dict) and "error" in answer:
        raise HTTPProblem(409, f"{hostname}: {answer['error']}")
    said = answer.get("ok") if isinstance(answer, dict) else answer
    return f"{hostname}: {said}"


def run_action(ctx: Context, run_id: str, action: str) -> str:
    from runner.pipeline import control

    run_views.load(ctx, run_id)  # 404 first
    try:
        record = control.cancel(ctx.app, run_id) if action == "cancel" else \
            control.retry(ctx.app, run_id)
    except PipelineError as exc:
        raise HTTPProblem(409, str(exc)) from None
    return f"run {run_id}: {record.state}" + (f" (attempt {record.attempt})"
                                              if action == "retry" else "")


def submit(ctx: Context, name: str, params: dict[str, str]) -> str:
    """Start a run of pipeline ``name`` (in ``--pipelines``) with ``params`` as typed in the
    form: a typed param converts its text, an untyped one reads it as YAML (as ``-p``)."""
    from runner.config.safe_yaml import YAMLError, load_value
    from runner.pipeline import engine
    from runner.pipeline.validate import load_pipeline

    run_views.need_pipeline_folder(ctx)
    path = run_views.pipeline_files(ctx).get(name)
    if path is None:
        raise not_found(f"no pipeline {name!r} in --pipelines {ctx.options.pipelines}")
    loaded = load_pipeline(path)
    given: dict[str, Any] = {}
    for key, text in params.items():
        spec = loaded.model.params.get(key)
        if spec is None:
            raise HTTPProblem(400, f"pipeline {name!r} has no param {key!r}; its params: "
                                   f"{', '.join(loaded.model.params) or 'none'}")
        if text == "" and not spec.required:
            continue  # (left blank in the form: the default)
        value: Any = text
        if spec.type == "any":
            try:
                value = load_value(text)
            except YAMLError:
                pass
        given[key] = value
    try:
        record = engine.submit(ctx.app, loaded, given)
    except RunnerError as exc:
        raise HTTPProblem(400, str(exc)) from None
    return record.id
