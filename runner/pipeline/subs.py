"""Sub-pipelines: a step ``pipeline: other.yaml`` with ``params:`` runs another pipeline as one
step and takes its final result.

Checked when the parent is loaded (so ``runner validate`` finds it before anything runs): the
file (relative to the parent) must load, its params must be known and the required ones given,
and no file may include itself through others (a cycle, named file by file).

At run time the parent's step starts a child run (id ``<parent run>.<step>``, keyed so a step
started twice makes one child); the child's pipeline travels in the result backend
(``pipespec:<sha256>``), so a worker on another host needs no file. When the child run ends, its
end settles the parent's step, and the step's result is the child's final step's result (a
mapping by step name when it has several).
"""

from __future__ import annotations

import json
import os
from typing import Any

from runner.exceptions import PipelineError
from runner.pipeline.model import Pipeline
from runner.pipeline.source import Located

_LOADING: list[str] = []  # files being loaded, outermost first: a file met again is a cycle


def load_subs(model: Pipeline, located: Located, task_names: Any = None
              ) -> tuple[dict[str, Any], list[str]]:
    """The sub-pipelines of ``model``'s steps, loaded, and the problems found."""
    from runner.pipeline.validate import load_pipeline

    subs: dict[str, Any] = {}
    problems: list[str] = []
    me = os.path.abspath(located.file)
    _LOADING.append(me)
    try:
        for name, step in model.steps.items():
            if step.pipeline is None:
                continue
            where = located.where(("steps", name, "pipeline"))
            path = os.path.normpath(os.path.join(os.path.dirname(me), step.pipeline))
            if path in _LOADING:
                chain = [*_LOADING[_LOADING.index(path):], path]
                problems.append(f"{where}: sub-pipelines form a cycle: "
                                f"{' -> '.join(os.path.basename(p) for p in chain)}")
                continue
            try:
                child = load_pipeline(path, task_names)
            except PipelineError as exc:
                problems += [f"{where}: sub-pipeline {step.pipeline!r}: {problem}"
                             for problem in exc.problems]
                continue
            problems += _param_problems(located, name, step.params, child)
            subs[name] = child
    finally:
        _LOADING.pop()
    return subs, problems


def _param_problems(located: Located, name: str, given: dict, child: Any) -> list[str]:
    known = child.model.params
    problems = [f"{located.where(('steps', name, 'params', param))}: sub-pipeline "
                f"{child.name!r} has no param {param!r}; it has: {', '.join(known) or '-'}"
                for param in given if param not in known]
    problems += [f"{located.where(('steps', name, 'params'))}: sub-pipeline {child.name!r} "
                 f"requires param {param!r}" for param, spec in known.items()
                 if spec.required and param not in given]
    return problems


# -- at run time ----------------------------------------------------------------------------


def spec_key(sha256: str) -> str:
    return f"pipespec:{sha256}"


def subs_key(run_id: str) -> str:
    return f"runsubs:{run_id}"


def store_subs(backend: Any, run_id: str, loaded: Any) -> None:
    """Keep the run's sub-pipelines (and theirs) in the backend for the workers."""
    if not loaded.subs:
        return
    backend.put_data(subs_key(run_id), json.dumps(_store(backend, loaded)).encode())


def _store(backend: Any, loaded: Any) -> dict[str, str]:
    shas = {}
    for name, child in loaded.subs.items():
        backend.put_data(spec_key(child.sha256), json.dumps({
            "spec": child.model.model_dump(mode="json"), "path": child.path,
            "subs": _store(backend, child)}).encode())
        shas[name] = child.sha256
    return shas


def load_sub(backend: Any, run_id: str, step: str) -> Any:
    """The LoadedPipeline of ``step``'s sub-pipeline in run ``run_id``."""
    from runner.pipeline.validate import LoadedPipeline

    raw = backend.get_data(subs_key(run_id))
    sha = json.loads(raw).get(step) if raw else None
    stored = backend.get_data(spec_key(sha)) if sha else None
    if stored is None:
        raise PipelineError(f"run {run_id}: the sub-pipeline of step {step!r} is not stored")
    return _loaded(backend, sha, json.loads(stored), LoadedPipeline)


def _loaded(backend: Any, sha: str, data: dict, cls: Any) -> Any:
    subs = {}
    for name, child_sha in data["subs"].items():
        subs[name] = _loaded(backend, child_sha, json.loads(backend.get_data(
            spec_key(child_sha))), cls)
    return cls(Pipeline.model_validate(data["spec"]), data["path"], "", sha,
               Located(data["spec"], data["path"]), subs)


def child_run_id(run_id: str, step: str, attempt: int) -> str:
    return f"{run_id}.{step}" + ("" if attempt == 1 else f"-a{attempt}")
