"""Sub-pipelines: a step `pipeline: other.yaml` with `params:` runs another pipeline as one
step and takes its final result; what `runner validate` refuses (cycles, unknown params, a
missing file). Real workers, SQLite and Redis."""

from __future__ import annotations

import pytest

from runner.pipeline.runs import load_run

CHILD = """\
name: child
app: pipeline_tasks
params:
  n: {type: int, required: true}
steps:
  each: {task: pipeline_tasks.double, map: "{{ range(params.n) | list }}", args: ["{{ item }}"]}
  sum: {task: pipeline_tasks.collect, needs: [each], args: ["{{ steps.each.result | sum }}"],
        kwargs: {label: child-sum}}
"""

PARENT = """\
name: parent
app: pipeline_tasks
steps:
  size: {task: pipeline_tasks.echo, args: [4], kwargs: {label: size}}
  inner:
    pipeline: child.yaml
    needs: [size]
    params: {n: "{{ steps.size.result }}"}
  report: {task: pipeline_tasks.collect, needs: [inner], args: ["{{ steps.inner.result * 10 }}"],
           kwargs: {label: report}}
"""


@pytest.mark.transports("sqlite", "redis")
def test_a_sub_pipeline_runs_as_one_step_and_gives_its_final_result(pipelines):
    pipelines.write(CHILD, "child.yaml")
    path = pipelines.write(PARENT, "parent.yaml")
    pipelines.worker("-c", "2")
    done = pipelines.cli("submit", path, "--wait", "--timeout", "40")
    assert done.returncode == 0, done.stdout + done.stderr
    run = done.stdout.splitlines()[0]
    record = load_run(pipelines.app.backend, run)
    assert record.steps["inner"].child == f"{run}.inner"
    child = load_run(pipelines.app.backend, f"{run}.inner")
    assert (child.pipeline, child.state, child.params) == ("child", "success", {"n": 4})
    assert child.parent == {"run": run, "step": "inner", "attempt": 1}
    assert pipelines.result(run, "inner") == 12  # 0 + 2 + 4 + 6
    assert pipelines.result(run, "report") == 120
    assert "  report: 120" in done.stdout


@pytest.mark.transports("sqlite", "redis")
def test_a_failing_sub_pipeline_fails_its_step_and_retry_runs_it_again(pipelines, tmp_path):
    pipelines.write("name: flaky-child\napp: pipeline_tasks\nsteps:\n"
                    "  one: {task: pipeline_tasks.broken_while_flagged, args: [sub]}\n",
                    "child.yaml")
    path = pipelines.write("name: p\napp: pipeline_tasks\nsteps:\n"
                           "  inner: {pipeline: child.yaml}\n"
                           "  after: {task: pipeline_tasks.echo, needs: [inner], "
                           "args: ['{{ steps.inner.result }}']}\n", "parent.yaml")
    (tmp_path / "broken-sub").touch()
    pipelines.worker("-c", "2")
    run = pipelines.submit(path)
    record = pipelines.wait(run)
    assert (record.state, record.steps["inner"].state) == ("failed", "failed")
    assert record.steps["inner"].error == f"sub-pipeline run {run}.inner failed"
    (tmp_path / "broken-sub").unlink()
    retried = pipelines.cli("retry", run, "--wait", "--timeout", "40")
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert pipelines.result(run, "after") == "sub"
    assert load_run(pipelines.app.backend, run).steps["inner"].child == f"{run}.inner-a2"


def test_validate_refuses_a_cycle_unknown_params_and_a_missing_file(pipelines):
    pipelines.write("name: a\nsteps:\n  b: {pipeline: b.yaml}\n", "a.yaml")
    pipelines.write("name: b\nsteps:\n  a: {pipeline: a.yaml}\n", "b.yaml")
    cycle = pipelines.cli("validate", pipelines.dir / "a.yaml")
    assert cycle.returncode == 1
    assert "sub-pipelines form a cycle: a.yaml -> b.yaml -> a.yaml" in cycle.stderr
    assert f"{pipelines.dir / 'a.yaml'}:3:" in cycle.stderr
    pipelines.write(CHILD, "child.yaml")
    bad = pipelines.write("""\
name: bad
app: pipeline_tasks
steps:
  inner:
    pipeline: child.yaml
    params: {m: 1}
  gone: {pipeline: nowhere.yaml}
""", "bad.yaml")
    checked = pipelines.cli("validate", bad)
    assert checked.returncode == 1
    errors = checked.stderr
    assert f"{bad}:6:14: sub-pipeline 'child' has no param 'm'; it has: n" in errors
    assert f"{bad}:6:5: sub-pipeline 'child' requires param 'n'" in errors
    assert "nowhere.yaml: no such pipeline file" in errors and f"{bad}:7:" in errors
    both = pipelines.write("name: both\nsteps:\n"
                           "  x: {task: pipeline_tasks.echo, pipeline: child.yaml}\n", "both.yaml")
    assert f"{both}:3:3: steps.x: Value error, a step needs exactly one of 'task' or " \
           f"'pipeline'" in pipelines.cli("validate", both).stderr


def test_runner_run_consumes_the_queues_of_sub_pipelines_too(pipelines):
    pipelines.write("name: c\napp: pipeline_tasks\nsteps:\n"
                    "  far: {task: pipeline_tasks.request_info, queue: faraway}\n", "child.yaml")
    path = pipelines.write("name: p\napp: pipeline_tasks\nsteps:\n"
                           "  inner: {pipeline: child.yaml}\n", "parent.yaml")
    done = pipelines.cli("run", path, "--timeout", "40")
    assert done.returncode == 0, done.stdout + done.stderr
    run = done.stdout.splitlines()[0].split()[1]
    assert pipelines.result(run, "inner")["queue"] == "faraway"
    shown = pipelines.cli("graph", path)
    assert "  inner (pipeline child.yaml)" in shown.stdout
