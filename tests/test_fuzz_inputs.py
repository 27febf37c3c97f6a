"""Property-based fuzzing of everything a user types: pipeline files, settings (YAML and
values), templates, cron strings and ``-p NAME=VALUE``. Whatever the input, the answer is a
result or runner's own error (a RunnerError, or the documented error of the function), never
another exception or a hang."""

from __future__ import annotations

import string
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from runner.cli.pipelines import parse_params
from runner.cli.validate import validate
from runner.config.conf import Conf
from runner.config.safe_yaml import load
from runner.config.settings import SETTING_NAMES, Settings
from runner.exceptions import ConfigError, PipelineError, RunnerError
from runner.pipeline import engine, template
from runner.pipeline.template import RenderError, check_syntax, render
from runner.pipeline.validate import load_pipeline_text
from runner.schedules import crontab, parse_every

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.function_scoped_fixture])

def texts(tokens: list[str], max_size: int) -> st.SearchStrategy[str]:
    """Strings made of ``tokens`` (characters and words that matter to the parser)."""
    return st.lists(st.sampled_from(tokens), max_size=max_size).map("".join)


YAMLISH = texts(list("abcnsteypkNOY01239 :-[]{},&*!|>'\"#?%@`~.\n\t<=\\_/") + [
    "steps:", "name:", "task:", "{{", "}}", "&a", "*a", "<<:", "\u00e9", "\x00", "\ufeff",
    "\n  ", "- ", "---"], 120)
KEYS = st.sampled_from(["name", "steps", "task", "args", "kwargs", "needs", "map", "when",
                        "params", "type", "default", "required", "defaults", "triggers",
                        "cron", "every", "timezone", "retries", "priority", "timeout", "a",
                        "b", "NO", "on", "<<", "0755", "1:20"])
TEMPLATES = st.sampled_from(["{{ params.a }}", "{{ steps.a.result }}", "{{ item }}",
                             "{{ run.ds }}", "{{ 'x' * 3 }}", "{{ x.__class__ }}", "{{",
                             "{% for i in range(3) %}{{ i }}{% endfor %}", "{{ 1 / 0 }}",
                             "{{ params | lenght }}"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=20), TEMPLATES,
                    st.dates().map(lambda d: d.isoformat()))
ANY_KEYS = st.one_of(KEYS, st.integers(), st.none(), st.booleans(), st.floats(), st.dates())
TREES = st.recursive(SCALARS, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(ANY_KEYS, children, max_size=5)),
    max_leaves=30)


def pipelines() -> st.SearchStrategy[dict]:
    """Mappings shaped roughly like pipelines, often valid, often not."""
    step = st.fixed_dictionaries({"task": st.sampled_from(["t.a", "t.b", 3, None])},
                                 optional={"args": st.lists(SCALARS, max_size=3),
                                           "kwargs": st.dictionaries(KEYS, SCALARS, max_size=3),
                                           "needs": st.lists(st.sampled_from(["a", "b", "c"]),
                                                             max_size=2),
                                           "map": st.one_of(TEMPLATES, st.lists(SCALARS)),
                                           "when": st.one_of(TEMPLATES, st.booleans()),
                                           "retries": st.integers(-2, 5)})
    return st.fixed_dictionaries(
        {"name": st.one_of(st.just("p"), st.text(max_size=5)),
         "steps": st.dictionaries(st.one_of(st.sampled_from(["a", "b", "c"]), ANY_KEYS),
                                  st.one_of(step, TREES), max_size=3)},
        optional={"params": st.dictionaries(ANY_KEYS, st.one_of(SCALARS, TREES), max_size=3),
                  "triggers": st.lists(st.dictionaries(KEYS, SCALARS, max_size=3), max_size=2),
                  "defaults": TREES})


@FUZZ
@given(YAMLISH)
def test_any_text_as_a_pipeline_is_loaded_or_refused_with_a_pipeline_error(text):
    try:
        load_pipeline_text(text, "fuzz.yaml")
    except PipelineError as exc:
        assert str(exc)


@FUZZ
@given(st.one_of(pipelines(), TREES))
def test_any_structure_as_a_pipeline_is_loaded_or_refused_with_a_pipeline_error(data):
    text = yaml.safe_dump(data, allow_unicode=True)
    try:
        load_pipeline_text(text, "fuzz.yaml")
    except PipelineError as exc:
        assert all(problem.startswith("fuzz.yaml") for problem in exc.problems), exc.problems


@settings(max_examples=60, deadline=None)
@given(st.one_of(pipelines(), st.binary(max_size=100).map(bytes.hex)))
def test_runner_validate_exits_0_or_1_on_any_pipeline_file(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_text(yaml.safe_dump(data) if isinstance(data, dict) else f"steps:\n{data}")
        result = CliRunner().invoke(validate, [str(path), "--kind", "pipeline"])
    assert result.exit_code in (0, 1), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception


@settings(max_examples=80, deadline=None)
@given(st.one_of(YAMLISH, st.binary(max_size=60)))
def test_runner_validate_exits_0_or_1_on_any_yaml_file_pipeline_or_settings(content):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.yaml"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        result = CliRunner().invoke(validate, [str(path)])
    assert result.exit_code in (0, 1), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception


@FUZZ
@given(YAMLISH)
def test_any_text_as_yaml_is_data_or_a_yaml_error(text):
    try:
        load(text, "fuzz.yaml")
    except RunnerError:
        pass


@FUZZ
@given(st.one_of(TREES, st.dictionaries(st.sampled_from(SETTING_NAMES), TREES, max_size=4)))
def test_any_settings_file_is_read_or_refused_with_a_config_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "runner.yaml"
    path.write_text(yaml.safe_dump(data))
    conf = Conf(environ={})
    try:
        conf.load_file(path)
        conf.settings  # noqa: B018 - validates the merged layers
    except ConfigError as exc:
        assert str(exc)


@FUZZ
@given(st.dictionaries(st.sampled_from(SETTING_NAMES), TREES, max_size=4))
def test_any_settings_values_are_accepted_or_refused_with_a_validation_error(values):
    try:
        Settings.model_validate(values)
    except ValidationError:
        pass
    try:
        Conf(environ={}).update(values)
    except ConfigError:
        pass


@FUZZ
@given(st.dictionaries(st.sampled_from([f"RUNNER_{n.upper()}" for n in SETTING_NAMES]),
                       st.text(alphabet=string.printable, max_size=30), max_size=3))
def test_any_runner_variables_are_read_or_refused_with_a_config_error(environ):
    try:
        Conf(environ=environ).settings  # noqa: B018
    except ConfigError:
        pass


TEMPLATE_TEXT = texts(list("{}%#()[]|.,'\"+-*/ ~=<>!ax1_") + [
    "{{", "}}", "{%", "%}", "for ", " in ", "range", "endfor", "if ", "endif", "params",
    "steps", "item", "__class__", "loop", "set ", "macro", "10**9", "*9", "center",
    "format", "join", "\n"], 40)


@FUZZ
@given(TEMPLATE_TEXT)
def test_any_template_is_checked_and_rendered_or_refused_with_a_render_error(text):
    assert check_syntax(text) is None or isinstance(check_syntax(text), str)
    try:
        render(text, {"params": {"a": [1, 2]}, "steps": {}, "item": "x", "run": {}})
    except RenderError:
        pass


CRON = texts(list("0123456789*/-,? LW#") + [
    "mon", "fri", "jan", "dec", " ", "  ", "60", "24", "32", "13", "8"], 20)


@FUZZ
@given(CRON)
def test_any_cron_string_is_a_schedule_or_a_config_error(text):
    try:
        schedule = crontab.from_string(text)
    except ConfigError:
        return
    try:
        schedule.next_after(datetime(2026, 1, 1, tzinfo=UTC))
    except ConfigError:
        pass


@FUZZ
@given(st.text(max_size=12))
def test_any_interval_is_a_schedule_or_a_config_error(text):
    try:
        parse_every(text)
    except ConfigError:
        pass


PARAMS_FILE = """\
name: p
params:
  n: {type: int, default: 1}
  day: {type: date, default: "{{ run.ds }}"}
  names: {type: list, default: []}
  flag: {type: bool, default: false}
  x: {default: 1}
steps:
  a: {task: t.a}
"""


@pytest.fixture(scope="module")
def params_pipeline():
    return load_pipeline_text(PARAMS_FILE, "p.yaml")


@FUZZ
@given(st.lists(st.one_of(
    st.text(max_size=20),
    st.tuples(st.sampled_from(["n", "day", "names", "flag", "x", "y"]),
              st.text(max_size=20)).map("=".join)), max_size=4))
def test_any_p_name_value_is_a_param_or_a_clear_error(params_pipeline, pairs):
    model = params_pipeline.model
    try:
        given_params = parse_params(tuple(pairs), model)
    except click.BadParameter:
        return
    try:
        engine.resolve_params(model, given_params,
                              engine.run_context("r", "p", datetime(2026, 1, 1, tzinfo=UTC)))
    except PipelineError:
        pass


@given(st.one_of(st.text(), st.integers(), st.floats(allow_nan=False), st.booleans(),
                 st.none(), st.lists(st.integers())),
       st.sampled_from(sorted(template.FALSE_WORDS)), st.text(" \t\n", max_size=3))
def test_a_condition_is_always_a_boolean_and_every_false_word_is_false(value, word, space):
    """``when:``'s reading: any rendered value gives True or False (never an error), and a
    false word in any case, with blanks around it, is False."""
    assert template.is_true(value) in (True, False)
    assert template.is_true(f"{space}{word.upper()}{space}") is False
    assert template.is_true(word.capitalize()) is False
