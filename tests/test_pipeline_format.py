"""The pipeline file format and what is refused before anything is enqueued: every key of the
model, problems reported all at once with file:line:col, ``runner validate``, ``runner submit``
refusing bad files and params, ``runner graph`` and the committed JSON schema."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import pytest

from runner.exceptions import PipelineError
from runner.pipeline.schema import SCHEMA_PATH, render
from runner.pipeline.validate import load_pipeline, load_pipeline_text
from tests.helpers import run_runner

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "pipelines").glob("*.yaml"))

EVERY_FIELD = """\
name: every-field
description: Uses every key of the format.
app: pipeline_tasks
config: settings.yaml
key: "every-field:{{ params.day }}"
max_active_runs: 2
params:
  day: {type: date, default: "{{ run.ds }}", description: The day of the run.}
  count: {type: integer, required: true}
  ratio: {type: number, default: 0.5}
  flag: {type: boolean, default: false}
  names: {type: array, default: [a, b]}
  extra: {type: object, default: {k: v}}
  label: {type: string, default: "run of {{ run.pipeline }}"}
  at: {type: datetime, default: "{{ run.logical_date }}"}
  anything: 42
defaults: {queue: celery, retries: 1, retry_backoff: 0.1, retry_delay: 0.2, timeout: 30,
           soft_timeout: 20, priority: 3, ignore_failure: false, serializer: json,
           rate_limit: 10/s, rate_limit_scope: task}
steps:
  first:
    task: pipeline_tasks.describe
    description: Shows what it was given.
    args: ["{{ params.count }}", "{{ params.day }}"]
    kwargs: {label: "{{ params.label }}"}
  each:
    task: pipeline_tasks.double
    needs: first
    map: "{{ params.names }}"
    args: ["{{ index }}"]
    when: "{{ not params.flag }}"
    queue: other
    retries: 0
    retry_backoff: false
    retry_delay: 1
    timeout: 10
    soft_timeout: 5
    priority: 9
    ignore_failure: true
    serializer: yaml
    rate_limit: 100/m
    rate_limit_scope: step
    trigger_rule: all_done
    concurrency: 2
triggers:
  - {cron: "30 2 * * *", timezone: Europe/Oslo, params: {count: 1}, catchup: latest}
  - {every: 15m}
"""


def runner_cli(*args, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runner", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def problems_of(text: str) -> list[str]:
    with pytest.raises(PipelineError) as caught:
        load_pipeline_text(text, "p.yaml")
    return caught.value.problems


# -- every key of the model ---------------------------------------------------------------------


def test_every_key_of_the_format_is_read_into_the_model():
    model = load_pipeline_text(EVERY_FIELD, "p.yaml").model
    assert (model.name, model.description) == ("every-field", "Uses every key of the format.")
    assert (model.app, model.config) == ("pipeline_tasks", "settings.yaml")
    params = model.params
    assert {n: p.type for n, p in params.items()} == {
        "day": "date", "count": "int", "ratio": "float", "flag": "bool", "names": "list",
        "extra": "dict", "label": "str", "at": "datetime", "anything": "any"}
    assert params["count"].required and not params["day"].required
    assert params["day"].description == "The day of the run."
    assert params["anything"].default == 42  # `anything: 42` is short for {default: 42}
    assert model.defaults.model_dump() == {
        "queue": "celery", "retries": 1, "retry_backoff": 0.1, "retry_delay": 0.2,
        "timeout": 30, "soft_timeout": 20, "priority": 3, "ignore_failure": False,
        "serializer": "json", "rate_limit": "10/s", "rate_limit_scope": "task"}
    assert (model.key, model.max_active_runs) == ("every-field:{{ params.day }}", 2)
    first, each = model.steps["first"], model.steps["each"]
    assert first.description == "Shows what it was given."
    assert first.kwargs == {"label": "{{ params.label }}"}
    assert each.needs == ["first"]  # a single name is a list of one
    assert (each.map, each.when) == ("{{ params.names }}", "{{ not params.flag }}")
    overridden = {key: model.option(each, key) for key in model.defaults.model_dump()}
    assert overridden == {"queue": "other", "retries": 0, "retry_backoff": False,
                          "retry_delay": 1, "timeout": 10, "soft_timeout": 5, "priority": 9,
                          "ignore_failure": True, "serializer": "yaml", "rate_limit": "100/m",
                          "rate_limit_scope": "step"}
    assert (each.trigger_rule, each.concurrency) == ("all_done", 2)
    assert first.trigger_rule is None  # all_success
    assert model.option(first, "queue") == "celery"  # from defaults
    cron, every = model.triggers
    assert (cron.cron, cron.timezone, cron.params, cron.catchup) == (
        "30 2 * * *", "Europe/Oslo", {"count": 1}, "latest")
    assert (every.every, every.cron, every.catchup) == ("15m", None, "skip")


def test_a_step_with_only_a_task_gets_empty_args_and_no_options():
    model = load_pipeline_text("name: x\nsteps:\n  a: {task: t.a}\n", "p.yaml").model
    step = model.steps["a"]
    assert (step.args, step.kwargs, step.needs, step.map, step.when) == ([], {}, [], None, None)
    assert all(model.option(step, key) is None for key in model.defaults.model_dump())


# -- problems, all at once, with file:line:col ---------------------------------------------------


def test_malformed_yaml_names_the_line_and_column():
    problems = problems_of("name: x\nsteps:\n  a: {task: t.a\n  b: {task: t.b}\n")
    assert len(problems) == 1
    assert problems[0].startswith("p.yaml:4:")
    assert "not valid YAML" in problems[0]


def test_a_file_that_is_not_a_mapping_is_refused():
    assert "is a mapping with 'name' and 'steps'" in problems_of("- a\n- b\n")[0]


def test_wrong_types_are_reported_at_their_line():
    text = ("name: x\n"                       # 1
            "defaults: {retries: lots}\n"     # 2
            "steps:\n"                        # 3
            "  a:\n"                          # 4
            "    task: t.a\n"                 # 5
            "    priority: 12\n"              # 6
            "    args: {not: a list}\n"       # 7
            "    timeout: -1\n"               # 8
            "    ignore_failure: maybe\n")    # 9
    problems = {p.split(": ")[0]: p for p in problems_of(text)}
    assert sorted(problems) == [
        "p.yaml:2:12", "p.yaml:6:5", "p.yaml:7:5", "p.yaml:8:5", "p.yaml:9:5"]
    assert "defaults.retries" in problems["p.yaml:2:12"] and '"lots"' in problems["p.yaml:2:12"]
    assert "steps.a.priority: Input should be less than or equal to 9" in problems["p.yaml:6:5"]
    assert "steps.a.args: Input should be a valid list" in problems["p.yaml:7:5"]
    assert "steps.a.timeout: Input should be greater than 0" in problems["p.yaml:8:5"]
    assert "steps.a.ignore_failure: Input should be a valid boolean" in problems["p.yaml:9:5"]


def test_unknown_keys_suggest_the_key_meant():
    problems = problems_of("name: x\nstep:\n  a: {task: t.a}\n")
    assert sorted(problems) == ["p.yaml:1:1: steps: required key is missing",
                                "p.yaml:2:1: step: unknown key; did you mean 'steps'?"]
    problems = problems_of("name: x\nsteps:\n  a: {task: t.a, neds: [b]}\n")
    assert problems == ["p.yaml:3:18: steps.a.neds: unknown key; did you mean 'needs'?"]


def test_every_problem_of_a_broken_file_is_reported_at_once():
    text = """\
name: bad name
params:
  limit: {type: int, default: many}
steps:
  a:
    task: t.a
    needs: [b, nope]
    args: ["{{ params.limmit }}", "{{ steps.c.result }}", "{{ item }}", "{{ run.day }}"]
  b:
    task: t.b
    needs: [a]
    when: "{{ steps.a.result > }}"
  c:
    task: t.c
    needs: [b]
    map: "{{ params.limit }}"
    kwargs: {x: "{{ steps.b.value }}"}
triggers:
  - {cron: "0 3 * * *", every: 1h}
  - {cron: "0 3 * *"}
"""
    problems = problems_of(text)
    expected = [
        ("p.yaml:1:1", "name: String should match pattern"),
        ("p.yaml:19:5", "a trigger needs exactly one of 'cron' or 'every'"),
        ("p.yaml:20:6", "cron string '0 3 * *' needs 5 fields"),
        ("p.yaml:7:16", "step 'a' needs 'nope', which is not a step"),
        ("p.yaml:7:5", "steps form a cycle: a -> b -> a"),
        ("p.yaml:8:12", "reads params.limmit, which is not a param; did you mean 'limit'?"),
        ("p.yaml:8:35", "reads steps.c, but step 'a' does not need it"),
        ("p.yaml:8:59", "reads 'item', which is not defined ('item' and 'index' exist only"),
        ("p.yaml:8:73", "reads run.day; run has id, logical_date, ds, pipeline, name"),
        ("p.yaml:12:5", "template syntax error in '{{ steps.a.result > }}'"),
        ("p.yaml:17:14", "reads steps.b.value; a step has 'result' and 'state'"),
        ("p.yaml:3:22", "param limit: 'many' is not a int"),
    ]
    assert len(problems) == len(expected), "\n".join(problems)
    for (where, what), problem in zip(expected, problems, strict=True):
        assert problem.startswith(f"{where}: "), problem
        assert what in problem, problem


def test_trigger_cron_and_timezone_are_checked():
    text = ("name: x\nsteps:\n  a: {task: t.a}\ntriggers:\n"
            "  - {cron: '61 2 * * *', timezone: Europe/Oslo}\n"
            "  - {cron: '0 3 * *'}\n"
            "  - {cron: '0 3 * * *', timezone: Mars/Olympus}\n"
            "  - {every: soon}\n")
    problems = problems_of(text)
    assert len(problems) == 4, problems
    assert problems[0].startswith("p.yaml:5:6: triggers.0.cron: Value error, bad cron "
                                  "expression '61 2 * * *'")
    assert problems[0].endswith("out of range (got \"61 2 * * *\")")
    assert problems[1].startswith("p.yaml:6:6: triggers.1.cron: ") and "needs 5" in problems[1]
    assert problems[2].startswith("p.yaml:7:25: triggers.2.timezone: Value error, unknown "
                                  "timezone 'Mars/Olympus'")
    assert problems[3].startswith("p.yaml:8:6: triggers.3.every: Value error, interval 'soon' "
                                  "is not like '30s'")


def test_param_defaults_of_the_wrong_type_are_reported_at_validation():
    problems = problems_of("name: x\nparams:\n  n: {type: int, default: abc}\n"
                           "  d: {type: date, default: 2026-02-30}\n"
                           "  ok: {type: date, default: '{{ run.ds }}'}\n"
                           "steps:\n  a: {task: t.a}\n")
    assert problems == ["p.yaml:3:18: param n: 'abc' is not a int",
                        "p.yaml:4:19: param d: '2026-02-30' is not a date"]


def test_a_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(PipelineError, match="nope.yaml: no such pipeline file"):
        load_pipeline(tmp_path / "nope.yaml")


# -- runner validate / submit / graph -----------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_validate_accepts_each_example_pipeline(path):
    result = runner_cli("validate", path, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("pipeline OK")
    assert "task names not checked" not in result.stdout  # pipelines.tasks imports


def test_validate_prints_every_problem_of_a_broken_file_and_exits_1(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nsteps:\n  a: {task: t.a, retries: -1}\n"
                    "  b: {task: t.b, needs: [c], args: ['{{ params.x }}']}\n")
    result = runner_cli("validate", path, cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        f"{path}:3:18", f"{path}:4:26", f"{path}:4:37"]


def test_validate_reports_unknown_task_names_with_a_suggestion(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("name: typo\napp: pipelines.tasks\nsteps:\n"
                    "  a: {task: pipelines.tasks.totl}\n")
    result = runner_cli("validate", path, cwd=ROOT)
    assert result.returncode == 1
    assert result.stderr.strip() == (f"{path}:4:7: step 'a': unknown task "
                                     f"'pipelines.tasks.totl'; did you mean "
                                     f"'pipelines.tasks.total'?")


def test_validate_of_malformed_pipeline_yaml_reports_it_as_a_pipeline(tmp_path):
    path = tmp_path / "mal.yaml"
    path.write_text("name: mal\nsteps:\n  a: [1\n")
    result = runner_cli("validate", path, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"{path}:4:1: not valid YAML")
    assert "configuration" not in result.stdout + result.stderr


def _run_count(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        queued = conn.execute("SELECT COUNT(*) FROM runner_messages").fetchone()[0] \
            if "runner_messages" in tables else 0
        return queued


def test_submit_refuses_an_invalid_file_and_enqueues_nothing(pipelines, tmp_path):
    path = pipelines.write("name: x\napp: pipeline_tasks\nsteps:\n"
                           "  a: {task: pipeline_tasks.echo, args: ['{{ params.nope }}']}\n"
                           "  b: {task: pipeline_tasks.ech, needs: [zz]}\n")
    result = pipelines.cli("submit", path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"{path}:4:41: '{{{{ params.nope }}}}' reads params.nope" in result.stderr
    assert f"{path}:5:41: step 'b' needs 'zz'" in result.stderr
    assert "Traceback" not in result.stderr
    assert pipelines.cli("runs").stdout.strip().count("\n") == 0  # the header only
    assert _run_count(tmp_path / "runner.db") == 0


def test_submit_refuses_an_unknown_task_and_enqueues_nothing(pipelines, tmp_path):
    path = pipelines.write("name: x\napp: pipeline_tasks\nsteps:\n"
                           "  a: {task: pipeline_tasks.echoo}\n")
    result = pipelines.cli("submit", path)
    assert result.returncode == 2
    assert "unknown task 'pipeline_tasks.echoo'; did you mean 'pipeline_tasks.echo'?" \
        in result.stderr
    assert pipelines.cli("runs").stdout.strip().count("\n") == 0
    assert _run_count(tmp_path / "runner.db") == 0


PARAMS = """\
name: params
app: pipeline_tasks
params:
  n: {type: int, required: true}
  shops: {type: list, default: [north]}
  day: {type: date, default: "{{ run.ds }}"}
  ratio: {type: float, default: 1}
steps:
  a: {task: pipeline_tasks.describe, args: ["{{ params.n }}"]}
"""


@pytest.mark.parametrize(("args", "message"), [
    ([], "param 'n' is required (-p n=...)"),
    (["-p", "n=many"], "param n: 'many' is not a int"),
    (["-p", "n=1", "-p", "shops=north"], "param shops: 'north' is not a list"),
    (["-p", "n=1", "-p", "day=2026-13-01"], "param day: '2026-13-01' is not a date"),
    (["-p", "n=1", "-p", "ratio=yes"], "param ratio: 'yes' is not a float"),
    (["-p", "n=1", "-p", "colour=red"], "unknown param 'colour'; the pipeline has: n, shops, "
                                        "day, ratio"),
    (["-p", "n"], "Invalid value for -p: 'n' is not NAME=VALUE"),
    (["-p", "=1"], "Invalid value for -p: '=1' is not NAME=VALUE"),
], ids=["missing", "int", "list", "date", "float", "unknown", "no-equals", "no-name"])
def test_submit_refuses_bad_params_and_enqueues_nothing(pipelines, tmp_path, args, message):
    path = pipelines.write(PARAMS)
    result = pipelines.cli("submit", path, *args)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert _run_count(tmp_path / "runner.db") == 0


def test_every_bad_param_is_reported_at_once(pipelines):
    path = pipelines.write(PARAMS)
    result = pipelines.cli("submit", path, "-p", "shops=x", "-p", "colour=red")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "Error: 3 problems:",
        "  - unknown param 'colour'; the pipeline has: n, shops, day, ratio",
        "  - param 'n' is required (-p n=...)",
        "  - param shops: 'x' is not a list"]


GRAPH = """\
name: diamond
steps:
  fetch: {task: t.fetch, map: [1, 2]}
  left: {task: t.left, needs: [fetch]}
  right: {task: t.right, needs: [fetch], when: "{{ steps.fetch.result }}"}
  join: {task: t.join, needs: [left, right]}
"""


def test_graph_text_lists_steps_with_their_needs(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(GRAPH)
    result = runner_cli("graph", path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "diamond: 4 steps",
        "  fetch (t.fetch)  [map [1, 2]]",
        "  left (t.left) <- fetch",
        "  right (t.right) <- fetch  [when {{ steps.fetch.result }}]",
        "  join (t.join) <- left, right"]


def test_graph_dot_and_mermaid_have_one_edge_per_need(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(GRAPH)
    dot = runner_cli("graph", path, "--format", "dot", cwd=tmp_path).stdout.splitlines()
    assert dot[0] == 'digraph "diamond" {' and dot[-1] == "}"
    assert '  "fetch" [label="fetch\\nt.fetch\\n(map)"];' in dot
    assert sorted(line for line in dot if "->" in line) == [
        '  "fetch" -> "left";', '  "fetch" -> "right";', '  "left" -> "join";',
        '  "right" -> "join";']
    mermaid = runner_cli("graph", path, "--format", "mermaid", cwd=tmp_path).stdout
    lines = mermaid.splitlines()
    assert lines[0] == "graph TD"
    assert '  join["join: t.join"]' in lines
    assert sorted(line for line in lines if "-->" in line) == [
        "  fetch --> left", "  fetch --> right", "  left --> join", "  right --> join"]


def test_graph_of_an_invalid_file_prints_its_problems(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("name: g\nsteps:\n  a: {task: t.a, needs: [a]}\n")
    result = runner_cli("graph", path, cwd=tmp_path)
    assert result.returncode == 2
    assert f"{path}:3:26: step 'a' needs itself" in result.stderr


# -- the JSON schema ------------------------------------------------------------------------------


def test_committed_pipeline_schema_is_up_to_date():
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render(), (
        "schemas/pipeline.schema.json is stale; run: python -m runner.pipeline.schema")


def test_schema_check_command_exits_1_when_stale(tmp_path):
    stale = tmp_path / "pipeline.schema.json"
    stale.write_text("{}\n")
    check = [sys.executable, "-m", "runner.pipeline.schema", "--check", "--output", str(stale)]
    result = subprocess.run(check, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 1
    assert "is stale; run: python -m runner.pipeline.schema" in result.stderr
    write = [sys.executable, "-m", "runner.pipeline.schema", "--output", str(stale)]
    assert subprocess.run(write, capture_output=True, cwd=ROOT, timeout=60).returncode == 0
    assert subprocess.run(check, capture_output=True, cwd=ROOT, timeout=60).returncode == 0


def test_schema_describes_steps_and_refuses_unknown_keys():
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"name", "steps"}
    step = schema["$defs"]["Step"]
    assert step["additionalProperties"] is False
    assert {"task", "needs", "map", "when", "args", "kwargs", "ignore_failure"} <= set(
        step["properties"])


def test_param_values_are_typed():
    from runner.pipeline.validate import coerce_param

    model = load_pipeline_text(EVERY_FIELD, "p.yaml").model
    p = model.params
    assert coerce_param("day", p["day"], "2026-11-24") == date(2026, 11, 24)
    assert coerce_param("day", p["day"], "2026-11-24T08:00:00+01:00") == date(2026, 11, 24)
    assert coerce_param("at", p["at"], "2026-11-24T08:00:00") == datetime(2026, 11, 24, 8)
    assert coerce_param("count", p["count"], "3") == 3
    assert coerce_param("ratio", p["ratio"], "2") == 2.0
    assert coerce_param("flag", p["flag"], "true") is True
    assert coerce_param("names", p["names"], "[x, 'y z']") == ["x", "y z"]
    assert coerce_param("extra", p["extra"], "{a: 1}") == {"a": 1}
    assert coerce_param("label", p["label"], "007") == "007"  # str stays text
    assert coerce_param("anything", p["anything"], "[1]") == "[1]"
    for name, value in [("count", "1.5"), ("count", "true"), ("flag", "1"), ("names", "{}")]:
        with pytest.raises(ValueError, match=f"param {name}: "):
            coerce_param(name, p[name], value)


def test_p_value_is_yaml_for_an_untyped_param_and_text_for_a_str_param(pipelines):
    path = pipelines.write("name: p\napp: pipeline_tasks\n"
                           "params: {limit: 1000, code: {type: str}, tags: {default: []}}\n"
                           "steps:\n  a: {task: pipeline_tasks.echo}\n")
    submitted = pipelines.cli("submit", path, "-p", "limit=5", "-p", "code=007",
                              "-p", "tags=[a, b]")
    assert submitted.returncode == 0, submitted.stderr
    status = pipelines.cli("status", submitted.stdout.strip())  # no worker: still running
    assert "params {code: '007', limit: 5, tags: [a, b]}" in status.stdout


def test_jinja_globals_and_template_variables_are_not_undefined_names():
    model = load_pipeline_text(
        "name: x\nparams: {shops: [a, b]}\nsteps:\n  a:\n    task: t.a\n"
        "    args: ['{{ range(3) | list }}', '{% for s in params.shops %}{{ s }}{% endfor %}',"
        " '{% set n = params.shops | length %}{{ n }}', '{{ dict(k=1) }}']\n", "p.yaml").model
    assert len(model.steps["a"].args) == 4


def test_unknown_tasks_are_reported_with_the_other_problems_at_once(tmp_path):
    path = tmp_path / "mixed.yaml"
    path.write_text("name: mixed\napp: pipelines.tasks\nsteps:\n"
                    "  a: {task: pipelines.tasks.totl, retries: -1}\n"
                    "  b: {task: pipelines.tasks.total, needs: [zz]}\n")
    result = runner_cli("validate", path, cwd=ROOT)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{path}:4:35: steps.a.retries: Input should be greater than or equal to 0 (got -1)",
        f"{path}:5:44: step 'b' needs 'zz', which is not a step",
        f"{path}:4:7: step 'a': unknown task 'pipelines.tasks.totl'; did you mean "
        f"'pipelines.tasks.total'?"]
    submitted = runner_cli("submit", path, cwd=ROOT)
    assert submitted.returncode == 2
    assert "3 problems" in submitted.stderr and "unknown task" in submitted.stderr


def test_validate_reports_an_app_that_does_not_import_at_its_line_and_checks_the_rest(
        tmp_path):
    path = tmp_path / "noapp.yaml"
    path.write_text("name: noapp\napp: no_such_module_here\nsteps:\n  a: {task: x.y, "
                    "needs: [b]}\n")
    result = run_runner("validate", path, cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    assert result.stderr.splitlines() == [
        f"{path}:4:26: step 'a' needs 'b', which is not a step",
        f"{path}:2:1: app 'no_such_module_here' cannot be loaded: -A no_such_module_here: no "
        f"module named 'no_such_module_here' (looked in {tmp_path} and sys.path; run from the "
        f"folder holding no_such_module_here.py)"]
