"""Templates that ask for too much (a 4 GB string, an endless loop) or for what the sandbox
refuses (``__class__``) fail at once with one clear line: at validate time naming
file:line:col when the template is a constant, at run time as a failed step naming it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from runner.pipeline.sandbox import MAX_OUTPUT_CHARS, MAX_RENDER_SECONDS
from runner.pipeline.template import RenderError, render
from tests.helpers import run_runner

STEP = "name: t\nsteps:\n  a:\n    task: t.a\n    args: [{arg}]\n"


def validate_step_arg(tmp_path: Path, arg: str):
    path = tmp_path / "t.yaml"
    path.write_text(STEP.format(arg=arg))
    return path, run_runner("validate", path, cwd=tmp_path)


def test_validate_refuses_a_4gb_string_at_once_naming_file_line_and_column(tmp_path):
    started = time.monotonic()
    path, result = validate_step_arg(tmp_path, "\"{{ 'x' * 10**9 }}\"")
    assert time.monotonic() - started < 20
    assert result.returncode == 1, result.stdout
    assert result.stderr.splitlines() == [
        f"{path}:5:12: template \"{{{{ 'x' * 10**9 }}}}\" failed: TemplateLimitError: "
        f"str * 1000000000 would be longer than 1,048,576 characters (items); templates may "
        f"not make values that big"]


@pytest.mark.parametrize("template, refused", [
    ("{{ ''.__class__.__mro__ }}", "'__mro__'"),
    ("{{ params.__init__ }}", "'__init__'"),
    ("{{ steps['__class__'] }}", "'__class__'"),
    ("{{ run._private }}", "'_private'"),
])
def test_validate_reports_what_the_sandbox_refuses_at_run_time(tmp_path, template, refused):
    path, result = validate_step_arg(tmp_path, f'"{template}"')
    assert result.returncode == 1, result.stdout
    [line] = result.stderr.splitlines()
    assert line.startswith(f"{path}:5:12: template error in {template!r}: the sandbox "
                           f"refuses ")
    assert refused in line


def test_validate_names_an_unknown_filter_with_a_suggestion(tmp_path):
    path, result = validate_step_arg(tmp_path, "\"{{ params | lenght }}\"")
    assert result.returncode == 1
    assert result.stderr.strip().endswith("no filter named 'lenght'; did you mean 'length'?")


def test_an_endless_constant_loop_is_stopped_by_the_render_deadline_in_validate(tmp_path):
    loop = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    path, result = validate_step_arg(tmp_path, f'"{loop}"')
    assert time.monotonic() - started < 20
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"{path}:5:12: template ")
    assert line.endswith(f"TemplateLimitError: took longer than {MAX_RENDER_SECONDS:g} s to "
                         f"render")


@pytest.mark.parametrize("template", [
    "{{ 'x' * 10**9 }}",
    "{{ [0] * 10**9 }}",
    "{{ (range(100000) | list) * 100 }}",
    "{{ 'x' | center(1000000000) }}",
    "{{ 'x' | indent(1000000000) }}",
    "{{ 'x'.ljust(10**9) }}",
    "{{ '%999999999d' % 1 }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ '%999999999d' | format(1) }}",
    "{{ 10 ** 100000 }}",
    "{{ [1] | slice(1000000000) | list }}",
    "{{ lipsum(1000000000) }}",
    "{{ ('x' * 1000000) | replace('x', 'xxxx') }}",
    "{{ ('x' * 1000000).replace('x', 'xxxx') }}",
    "{{ ('x' * 1000000).join(['a'] * 1000) }}",
    "{{ (['a'] * 1000) | join('x' * 1000000) }}",
    "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
])
def test_a_template_asking_for_too_much_fails_fast_with_a_render_error(template):
    started = time.monotonic()
    with pytest.raises(RenderError, match="TemplateLimitError"):
        render(template, {})
    # stopped by a limit, not left to run (unlimited, each would take minutes or gigabytes);
    # the margin is for a loaded machine (a parallel CI run saw 4.5 s)
    assert time.monotonic() - started < MAX_RENDER_SECONDS + 15


def test_values_passed_along_are_not_limited_only_what_a_template_makes():
    big = ["x" * 1000] * (MAX_OUTPUT_CHARS // 1000 + 10)
    assert render("{{ steps.a.result }}", {"steps": {"a": {"result": big}}}) is big
    assert render("{{ 'x' * 1000 }}", {}) == "x" * 1000
    assert render("{{ params.n | default(5000000) }}", {"params": {}}) == 5000000
    assert render("{{ 'a-b'.replace('-', '+') }} {{ [1, 2] | join(',') }}", {}) == "a+b 1,2"


def test_a_huge_string_at_run_time_fails_its_step_naming_it_not_the_database(pipelines):
    path = pipelines.write("""\
name: huge
app: pipeline_tasks
params: {n: {type: int, default: 1000000000}}
steps:
  big: {task: pipeline_tasks.echo, args: ["{{ 'x' * params.n }}"]}
""")
    record = pipelines.wait(pipelines.submit(path))
    assert record.state == "failed"
    assert record.steps["big"].error == (
        "step 'big': template \"{{ 'x' * params.n }}\" failed: TemplateLimitError: "
        "str * 1000000000 would be longer than 1,048,576 characters (items); templates may "
        "not make values that big")
