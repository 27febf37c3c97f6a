"""Partial runs: `--from STEP` and `--only STEP[,STEP]` take the results of the steps before
them from an earlier run (`--reuse RUN`, default the last successful one), and the bad input
that is refused before anything runs. Real workers, SQLite and Redis."""

from __future__ import annotations

import pytest

from runner.pipeline.runs import list_runs, load_run

pytestmark = pytest.mark.transports("sqlite", "redis")

ETL = """\
name: etl
app: pipeline_tasks
params: {n: 1}
steps:
  extract: {task: pipeline_tasks.double, map: [1, 2, 3], args: ["{{ item * params.n }}"],
            kwargs: {label: extract}}
  transform: {task: pipeline_tasks.collect, needs: [extract],
              args: ["{{ steps.extract.result | sum }}"], kwargs: {label: transform}}
  load: {task: pipeline_tasks.collect, needs: [transform],
         args: ["{{ steps.transform.result * 10 }}"], kwargs: {label: load}}
  side: {task: pipeline_tasks.echo, args: [side], kwargs: {label: side}}
"""


def test_from_a_step_reuses_the_results_before_it_from_the_last_successful_run(pipelines):
    path = pipelines.write(ETL)
    pipelines.worker("-c", "2")
    full = pipelines.submit(path)
    assert pipelines.wait(full).state == "success"
    before = list(pipelines.marks())
    partial = pipelines.cli("submit", path, "--from", "transform", "-p", "n=5", "--wait",
                            "--timeout", "40")
    assert partial.returncode == 0, partial.stdout + partial.stderr
    run = partial.stdout.splitlines()[0]
    record = load_run(pipelines.app.backend, run)
    assert record.reused_from == full
    assert {n: s.state for n, s in record.steps.items()} == {
        "extract": "success", "transform": "success", "load": "success", "side": "skipped"}
    assert record.steps["extract"].reason == f"reused from run {full}"
    assert pipelines.result(run, "extract") == [2, 4, 6]  # the earlier run's, not n=5's
    assert pipelines.result(run, "load") == 120
    assert pipelines.marks()[len(before):] == ["transform", "load"]  # extract did not run
    status = pipelines.cli("result", run, "extract")
    assert status.stdout == "[2, 4, 6]\n"


def test_only_named_steps_run_with_a_chosen_run_reused(pipelines):
    path = pipelines.write(ETL)
    pipelines.worker("-c", "2")
    first = pipelines.submit(path)
    pipelines.wait(first)
    second = pipelines.submit(path, n=2)
    pipelines.wait(second)
    done = pipelines.cli("run", path, "--only", "load", "--reuse", first, "--timeout", "40")
    assert done.returncode == 0, done.stdout + done.stderr
    run = done.stdout.splitlines()[0].split()[1]
    assert f"(results before it from run {first})" in done.stdout.splitlines()[0]
    record = load_run(pipelines.app.backend, run)
    assert [n for n, s in record.steps.items() if s.state == "success"] == [
        "extract", "transform", "load"]
    assert pipelines.result(run, "load") == 120  # from the first run's transform (12)


def test_partial_runs_refuse_bad_input_before_anything_runs(pipelines):
    path = pipelines.write(ETL)
    other = pipelines.write("name: other\napp: pipeline_tasks\nsteps:\n"
                            "  a: {task: pipeline_tasks.echo, args: [1]}\n", "other.yaml")
    no_run = pipelines.cli("submit", path, "--from", "load")
    assert no_run.returncode == 2
    assert "no successful run of pipeline 'etl' to take the results of extract, transform " \
           "from" in no_run.stderr
    unknown = pipelines.cli("run", path, "--from", "trasform")
    assert unknown.returncode == 2
    assert f"{path}: --from 'trasform' is not a step of pipeline 'etl'; did you mean " \
           f"'transform'?" in unknown.stderr
    pipelines.worker("-c", "1")
    foreign = pipelines.submit(other)
    pipelines.wait(foreign)
    wrong = pipelines.cli("submit", path, "--only", "load", "--reuse", foreign)
    assert wrong.returncode == 2
    assert f"--reuse {foreign}: that is a run of pipeline 'other', not of 'etl'" in wrong.stderr
    assert [r.pipeline for r in list_runs(pipelines.app.backend)] == ["other"]
