"""Loading a pipeline file and finding every problem in it before anything is enqueued.

Problems are reported all at once, each as ``file:line:col: what``: YAML syntax and the reader's
limits (:mod:`runner.config.safe_yaml`), unknown keys and wrong types (from the model), steps
that need missing steps, cycles, template syntax errors, unknown filters and attributes the
sandbox refuses, constant templates that fail or pass the render limits, templates reading
params or steps that do not exist, tasks the app does not register, and parameter values of
the wrong type. Every check is linear in the size of the file.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, get_args

from pydantic import ValidationError

from runner.config.safe_yaml import YAMLError, load_value, no_collection, read_text
from runner.exceptions import PipelineError
from runner.pipeline.model import TYPE_ALIASES, ParamSpec, ParamType, Pipeline
from runner.pipeline.source import MAX_PIPELINE_BYTES, Located, load_located
from runner.pipeline.template import RenderError, inspect, render, walk_strings

RUN_FIELDS = ("id", "logical_date", "ds", "pipeline", "name")


@dataclass
class LoadedPipeline:
    model: Pipeline
    path: str
    text: str
    sha256: str
    located: Located
    subs: dict[str, LoadedPipeline] = dataclass_field(default_factory=dict)  # step -> its sub-pipeline

    @property
    def name(self) -> str:
        return self.model.name


#: Given the file as written, the task names its app registers (None: do not check them).
TaskNames = Callable[[Located], Collection[str] | None]


def load_pipeline(path: str | Path, task_names: TaskNames | None = None) -> LoadedPipeline:
    """Read and check ``path``; raises PipelineError listing every problem (unknown tasks too,
    with ``task_names``)."""
    path = str(path)
    try:
        text = read_text(path, MAX_PIPELINE_BYTES)
    except YAMLError as exc:
        raise PipelineError(str(exc)) from None
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such pipeline file") from None
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return load_pipeline_text(text, path, task_names)


def load_pipeline_text(text: str, path: str = "<pipeline>",
                       task_names: TaskNames | None = None) -> LoadedPipeline:
    with no_collection():  # a big pipeline is a million small objects, none in a cycle
        return _load_pipeline_text(text, path, task_names)


def _load_pipeline_text(text: str, path: str, task_names: TaskNames | None) -> LoadedPipeline:
    try:
        located = load_located(text, path)
    except YAMLError as exc:
        raise PipelineError(str(exc)) from None
    if not isinstance(located.data, dict):
        raise PipelineError(f"{path}: a pipeline file is a mapping with 'name' and 'steps', "
                            f"got {type(located.data).__name__}")
    try:
        model = Pipeline.model_validate(located.data)
        problems = []
    except ValidationError as exc:
        model, problems = None, _model_problems(exc, located)
    view = model if model is not None else _lenient(located.data)
    problems += (graph_problems(view, located) + template_problems(view, located)
                 + param_problems(view, located))
    if task_names is not None:
        problems += task_problems(view, located, task_names(located))
    subs: dict[str, LoadedPipeline] = {}
    if not problems:
        from runner.pipeline.subs import load_subs

        subs, more = load_subs(model, located, task_names)
        problems += more
    if problems:
        raise PipelineError(problems)
    return LoadedPipeline(model, path, text, hashlib.sha256(text.encode()).hexdigest(), located,
                          subs)


def _lenient(data: dict) -> SimpleNamespace:
    """What the graph and template checks read, taken from data the model refused, so that
    every problem is reported at once."""
    def listify(value: Any) -> list:
        return [value] if isinstance(value, str) else value if isinstance(value, list) else []

    steps = {}
    for name, raw in (data.get("steps") or {}).items() if isinstance(data.get("steps"), dict) \
            else []:
        raw = raw if isinstance(raw, dict) else {}
        steps[str(name)] = SimpleNamespace(
            task=raw.get("task"),
            needs=[n for n in listify(raw.get("needs")) if isinstance(n, str)],
            args=raw.get("args"), kwargs=raw.get("kwargs"), map=raw.get("map"),
            when=raw.get("when"))
    params = {}
    if isinstance(data.get("params"), dict):
        for name, raw in data["params"].items():
            default = raw.get("default") if isinstance(raw, dict) else raw
            kind = raw.get("type") if isinstance(raw, dict) else None
            kind = TYPE_ALIASES.get(kind, kind) if isinstance(kind, str) else None
            params[str(name)] = SimpleNamespace(
                default=default, type=kind if kind in get_args(ParamType) else "any")
    return SimpleNamespace(steps=steps, params=params, key=data.get("key"))


def _model_problems(exc: ValidationError, located: Located) -> list[str]:
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        # pydantic adds the member name of unions/tagged parts to loc: keep real keys only
        path = _real_path(located, loc)
        key = ".".join(str(p) for p in path) or "(top level)"
        if error["type"] == "extra_forbidden":
            parent = _model_at(path[:-1])
            allowed = sorted(parent.model_fields) if parent else []
            hint = difflib.get_close_matches(str(path[-1]), allowed, n=1)
            message = f"{key}: unknown key" + (
                f"; did you mean {hint[0]!r}?" if hint else
                f" (allowed: {', '.join(allowed)})" if allowed else "")
        elif error["type"] == "missing":
            message = f"{key}: required key is missing"
        else:
            message = f"{key}: {error['msg']} (got {_given(error.get('input'))})"
        problems.append(f"{located.where(path)}: {message}")
    return problems


def _given(value: Any) -> str:
    """A value as the file wrote it, short (JSON where it can be: dates as keys cannot)."""
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text[:80]


def _real_path(located: Located, loc: tuple) -> tuple:
    path: list = []
    data: Any = located.data
    for part in loc:
        if isinstance(data, dict) and part in data:
            path.append(part)
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            path.append(part)
            data = data[part]
        elif isinstance(data, dict | list) or data is None:
            path.append(part)  # a missing or extra key: keep it for the message
            data = None
    return tuple(path)


def _model_at(path: tuple):
    """The pydantic model class that describes the mapping at ``path``."""
    from runner.pipeline.model import Step, StepOptions, Trigger

    if not path:
        return Pipeline
    if path[0] == "steps" and len(path) == 2:
        return Step
    if path[0] == "defaults" and len(path) == 1:
        return StepOptions
    if path[0] == "params" and len(path) == 2:
        return ParamSpec
    if path[0] == "triggers" and len(path) == 2:
        return Trigger
    return None


def task_problems(model: Pipeline, located: Located, known: Collection[str] | None
                  ) -> list[str]:
    """Steps whose task is not one of ``known`` (nothing to check when None or empty)."""
    if not known:
        return []
    problems = []
    for name, step in model.steps.items():
        if isinstance(step.task, str) and step.task not in known:  # (None: a sub-pipeline)
            hint = difflib.get_close_matches(step.task, list(known), n=1)
            problems.append(f"{located.where(('steps', name, 'task'))}: step {name!r}: "
                            f"unknown task {step.task!r}"
                            + (f"; did you mean {hint[0]!r}?" if hint else ""))
    return problems


def graph_problems(model: Pipeline, located: Located) -> list[str]:
    problems = []
    names = list(model.steps)
    for name, step in model.steps.items():
        for index, need in enumerate(step.needs):
            if need not in model.steps:
                hint = difflib.get_close_matches(need, names, n=1)
                problems.append(f"{located.where(('steps', name, 'needs', index))}: step "
                                f"{name!r} needs {need!r}, which is not a step"
                                + (f"; did you mean {hint[0]!r}?" if hint else ""))
            elif need == name:
                problems.append(f"{located.where(('steps', name, 'needs', index))}: step "
                                f"{name!r} needs itself")
    cycle = find_cycle(model)
    if cycle:
        problems.append(f"{located.where(('steps', cycle[0], 'needs'))}: steps form a cycle: "
                        f"{' -> '.join(cycle)}")
    return problems


def find_cycle(model: Pipeline) -> list[str] | None:
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for need in model.steps[name].needs:
            if need not in model.steps or need == name:
                continue
            if state.get(need) == 1:
                return stack[stack.index(need):] + [need]
            if need not in state:
                found = visit(need)
                if found:
                    return found
        stack.pop()
        state[name] = 2
        return None

    for name in model.steps:
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def ancestors(model: Pipeline, name: str) -> set[str]:
    seen: set[str] = set()
    todo = list(model.steps[name].needs)
    while todo:
        need = todo.pop()
        if need in seen or need not in model.steps:
            continue
        seen.add(need)
        todo.extend(model.steps[need].needs)
    return seen


class _Visible:
    """``target in visible``: whether a step needs ``target``, directly (the usual case, O(1))
    or through other steps (computed once per step, when first asked): validation stays linear
    in the number of steps for a long chain."""

    def __init__(self, model: Pipeline, name: str):
        self.model, self.name, self.all = model, name, None

    def __contains__(self, target: object) -> bool:
        if target in self.model.steps[self.name].needs:
            return True
        if self.all is None:
            self.all = ancestors(self.model, self.name)
        return target in self.all


def template_problems(model: Pipeline, located: Located) -> list[str]:
    problems: list[str] = []
    for name, spec in model.params.items():
        for path, text in walk_strings(spec.default, ("params", name, "default")):
            problems += _check_template(text, path, located, model, step=None, mapped=False,
                                        allowed={"run", "params"})
    key = getattr(model, "key", None)
    if isinstance(key, str):
        problems += _check_template(key, ("key",), located, model, step=None, mapped=False,
                                    allowed={"run", "params"})
    for name, step in model.steps.items():
        base = ("steps", name)
        visible = _Visible(model, name)
        for field in ("args", "kwargs", "map", "when", "params"):
            value = getattr(step, field, None)
            mapped = step.map is not None and field in ("args", "kwargs")  # `when`: the step
            for path, text in walk_strings(value, (*base, field)):
                problems += _check_template(text, path, located, model, step=name,
                                            mapped=mapped, visible=visible)
    return problems


def _check_template(text: str, path: tuple, located: Located, model: Pipeline,
                    step: str | None, mapped: bool, visible: Collection[str] | None = None,
                    allowed: set[str] | None = None) -> list[str]:
    where = located.where(path)
    inspection = inspect(text)
    if inspection.error:
        kind = "template syntax error" if inspection.syntax else "template error"
        return [f"{where}: {kind} in {_short(text)}: {inspection.error}"]
    if not inspection.references:  # a constant: render it now, with the run's limits
        try:
            render(text, {})
        except RenderError as exc:
            return [f"{where}: {_short(str(exc), 300, quote=False)}"]
        return []
    allowed = allowed or {"run", "params", "steps", *(("item", "index") if mapped else ())}
    problems = []
    for ref in inspection.references:
        head = ref[0]
        if head not in allowed:
            extra = (" ('item' and 'index' exist only in args and kwargs of a step with 'map')"
                     if head in ("item", "index") else "")
            problems.append(f"{where}: {text!r} reads {head!r}, which is not defined{extra}; "
                            f"templates can read: {', '.join(sorted(allowed))}")
        elif head == "params" and len(ref) > 1 and ref[1] not in model.params:
            hint = difflib.get_close_matches(ref[1], list(model.params), n=1)
            problems.append(f"{where}: {text!r} reads params.{ref[1]}, which is not a param"
                            + (f"; did you mean {hint[0]!r}?" if hint else ""))
        elif head == "run" and len(ref) > 1 and ref[1] not in RUN_FIELDS:
            problems.append(f"{where}: {text!r} reads run.{ref[1]}; run has "
                            f"{', '.join(RUN_FIELDS)}")
        elif head == "steps" and len(ref) > 1:
            target = ref[1]
            if target not in model.steps:
                problems.append(f"{where}: {text!r} reads steps.{target}, which is not a step")
            elif visible is not None and target not in visible:
                problems.append(f"{where}: {text!r} reads steps.{target}, but step {step!r} "
                                f"does not need it (add it to needs)")
            elif len(ref) > 2 and ref[2] not in ("result", "state"):
                problems.append(f"{where}: {text!r} reads steps.{target}.{ref[2]}; a step has "
                                f"'result' and 'state'")
    return problems


def _short(text: str, limit: int = 120, quote: bool = True) -> str:
    """``text`` for a message: quoted, and cut in the middle past ``limit`` characters."""
    shown = repr(text) if quote else text
    return shown if len(shown) <= limit else f"{shown[:limit // 2]}...{shown[-limit // 2:]}"


# -- parameters ----------------------------------------------------------------------------


def param_problems(model: Pipeline, located: Located) -> list[str]:
    """Defaults that are not of their param's type (template defaults are checked at submit,
    once rendered)."""
    problems = []
    for name, spec in model.params.items():
        if spec.default is None or any(True for _ in walk_strings(spec.default)):
            continue
        try:
            coerce_param(name, spec, spec.default)
        except ValueError as exc:
            problems.append(f"{located.where(('params', name, 'default'))}: {exc}")
    return problems


def coerce_param(name: str, spec: ParamSpec, value: Any) -> Any:
    """``value`` converted to the param's type; ValueError saying what is wrong."""
    kind = spec.type
    if kind == "any" or value is None:
        return value
    if isinstance(value, str) and kind not in ("str", "date", "datetime"):
        try:
            value = load_value(value)
        except YAMLError:
            raise ValueError(f"param {name}: {value!r} is not a {kind}") from None
    try:
        if kind == "str":
            return value if isinstance(value, str) else str(value)
        if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if kind == "bool" and isinstance(value, bool):
            return value
        if kind == "list" and isinstance(value, list):
            return value
        if kind == "dict" and isinstance(value, dict):
            return value
        if kind == "date":
            if isinstance(value, datetime):
                return value.date()
            if isinstance(value, date):
                return value
            return date.fromisoformat(str(value)[:10]) if len(str(value)) >= 10 and (
                "T" in str(value) or " " in str(value)) else date.fromisoformat(str(value))
        if kind == "datetime":
            if isinstance(value, datetime):
                return value
            return datetime.fromisoformat(str(value))
    except ValueError:
        pass
    raise ValueError(f"param {name}: {value!r} is not a {kind}")
