"""Hostile YAML given to ``runner validate`` (pipelines and settings files): every case ends in
exit 1 and one line naming the file (and line), never a hang, a memory blow-up or a traceback;
and scalars are read as YAML 1.2 reads them (``NO`` is a country code, not false)."""

from __future__ import annotations

import subprocess
from datetime import date
from pathlib import Path

import pytest

from runner.config.conf import Conf
from runner.config.safe_yaml import MAX_ALIAS_NODES, MAX_DEPTH
from runner.exceptions import ConfigError
from runner.pipeline.source import MAX_PIPELINE_BYTES
from runner.pipeline.validate import load_pipeline
from tests.helpers import run_runner

BILLION_LAUGHS = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
    'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n'
    'd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n'
    'e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n'
    'f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n'
    'g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n'
    'h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n'
    'i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n'
)
PIPELINE_HEAD = "name: p\nsteps:\n  a: {task: t.a}\n"


def validate(path: Path, *extra: str) -> subprocess.CompletedProcess:
    """``runner validate`` in a process of its own, as a user runs it (60 s: a hang fails)."""
    return run_runner("validate", path, *extra, cwd=path.parent)


def one_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line.strip() for line in result.stderr.strip().splitlines()
             if not line.startswith("configuration invalid")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_billion_laughs_pipeline_is_refused_at_the_alias_that_passes_the_limit(tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text(PIPELINE_HEAD + BILLION_LAUGHS)
    line = one_error(validate(path))
    assert line.startswith(f"{path}:9:8: aliases expand to more than {MAX_ALIAS_NODES:,} nodes")


def test_billion_laughs_settings_file_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "runner.yaml"
    laughs = "".join(f"  {line}\n" for line in BILLION_LAUGHS.splitlines())
    path.write_text("broker_url: memory://\nresult_backend_transport_options:\n" + laughs)
    line = one_error(validate(path))
    assert line.startswith(f"{path.name}:8:10: aliases expand to more than")


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path):
    path = tmp_path / "cycle.yaml"
    path.write_text(PIPELINE_HEAD + "x: &x [*x]\n")
    assert one_error(validate(path)) == (
        f"{path}:4:8: alias *x is inside its own anchor &x (a cycle)")


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 10_000])
def test_deep_nesting_is_one_error_naming_the_line(tmp_path, depth):
    path = tmp_path / "deep.yaml"
    path.write_text(PIPELINE_HEAD + "x: " + "[" * depth + "]" * depth + "\n")
    line = one_error(validate(path))
    assert line.startswith(f"{path}:4:")
    assert "nest" in line.removeprefix(str(path))  # ours, or libyaml's past depth 1000


def test_non_utf8_bytes_are_named_by_their_byte_offset(tmp_path):
    path = tmp_path / "latin1.yaml"
    data = PIPELINE_HEAD.encode() + "  b: {task: t.caf\u00e9}\n".encode("latin-1")
    path.write_bytes(data)
    offset = data.index(b"\xe9")
    assert one_error(validate(path)) == (
        f"{path}:4:18: not UTF-8: byte 0xe9 at byte offset {offset}; save the file as UTF-8")


def test_non_utf8_settings_file_is_one_error(tmp_path):
    path = tmp_path / "runner.yaml"
    path.write_bytes(b"task_default_queue: caf\xe9\n")
    assert one_error(validate(path)) == (
        f"{path.name}:1:24: not UTF-8: byte 0xe9 at byte offset 23; save the file as UTF-8")


def test_a_pipeline_file_past_the_size_limit_is_refused_unread(tmp_path):
    path = tmp_path / "huge.yaml"
    with open(path, "w") as out:
        out.write(PIPELINE_HEAD + "description: |\n")
        line = "  " + "x" * 1000 + "\n"
        out.write(line * (MAX_PIPELINE_BYTES // len(line) + 1))
    assert one_error(validate(path)) == (
        f"{path}: file is larger than 10 MiB; runner reads YAML files of at most 10 MiB")


def test_yaml_1_1_booleans_are_text_in_keys_and_values_of_a_pipeline(tmp_path):
    path = tmp_path / "rates.yaml"
    path.write_text("name: rates\nparams:\n  country: {type: str, default: NO}\n"
                    "  flag: {type: bool, default: TRUE}\n"
                    "steps:\n  convert:\n    task: t.convert\n"
                    "    kwargs: {rates: {NO: 1.0, SE: 0.9, on: off, y: n}, mode: 0755,"
                    " at: 1:20, n: 1_000, day: 2026-11-24, yes: true}\n")
    model = load_pipeline(path).model
    assert model.steps["convert"].kwargs == {
        "rates": {"NO": 1.0, "SE": 0.9, "on": "off", "y": "n"}, "mode": 755, "at": "1:20",
        "n": "1_000", "day": date(2026, 11, 24), "yes": True}
    assert model.params["country"].default == "NO"
    assert model.params["flag"].default is True


def test_yaml_1_1_booleans_are_text_in_a_settings_file(tmp_path):
    path = tmp_path / "runner.yaml"
    path.write_text("task_default_queue: no\nworker_concurrency: 010\n")
    conf = Conf(environ={})
    conf.load_file(path)
    assert conf.task_default_queue == "no"
    assert conf.worker_concurrency == 10


def test_a_python_tag_in_a_settings_file_is_refused_at_its_line(tmp_path):
    path = tmp_path / "runner.yaml"
    path.write_text("broker_url: memory://\nx: !!python/object/apply:os.system [true]\n")
    with pytest.raises(ConfigError, match=r"runner.yaml:2:4: unsupported tag"):
        Conf(environ={}).load_file(path)


def test_a_second_document_is_refused_at_its_line(tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text(PIPELINE_HEAD + "---\nname: q\n")
    assert one_error(validate(path)).startswith(f"{path}:4:1: expected one document")


def test_merge_keys_still_work_and_merged_keys_have_a_position(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("name: m\nsteps:\n  a: &base {task: t.a, retries: 2}\n"
                    "  b:\n    <<: *base\n    task: t.b\n    retries: -1\n")
    result = validate(path)
    assert one_error(result) == (
        f"{path}:7:5: steps.b.retries: Input should be greater than or equal to 0 (got -1)")


def test_the_pure_python_parser_reads_the_same_data_and_positions(monkeypatch):
    """Where libyaml is missing, PyYAML's own parser feeds the same reader."""
    import yaml

    from runner.config import safe_yaml

    text = ("name: p\nsteps:\n  a: &a {task: t.a, args: [1, NO, '2', 2026-01-02]}\n"
            "  b: {<<: *a, needs: [a]}\n")
    with_libyaml = safe_yaml.load(text, "p.yaml")
    monkeypatch.setattr(safe_yaml, "_Parser", yaml.SafeLoader)
    pure = safe_yaml.load(text, "p.yaml")
    assert (pure.data, pure.positions) == (with_libyaml.data, with_libyaml.positions)
    with pytest.raises(safe_yaml.YAMLError, match=r"p.yaml:1:101: nested deeper than 100"):
        safe_yaml.load("[" * 150 + "]" * 150, "p.yaml")
