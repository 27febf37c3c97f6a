"""Pipelines under load on real worker processes: a 1,000-item fan-out with its fan-in, and 50
runs at once on two workers, where every fan-in must fire exactly once."""

from __future__ import annotations

import time
from collections import Counter

import pytest

pytestmark = pytest.mark.transports("sqlite", "redis")

FAN_OUT = """\
name: fan-out
app: pipeline_tasks
params: {n: {type: int, default: 1000}}
steps:
  numbers: {task: pipeline_tasks.echo, args: ["{{ range(params.n) | list }}"]}
  each:
    task: pipeline_tasks.double
    needs: [numbers]
    map: "{{ steps.numbers.result }}"
    args: ["{{ item }}"]
  fan_in:
    task: pipeline_tasks.collect
    needs: [each]
    args: ["{{ steps.each.result }}"]
"""


def test_a_map_over_1000_items_feeds_the_fan_in_the_1000_results_in_item_order(pipelines):
    pipelines.worker("-c", "4")
    started = time.monotonic()
    run = pipelines.submit(pipelines.write(FAN_OUT))
    record = pipelines.wait(run, timeout=60)
    took = time.monotonic() - started
    assert record.state == "success", record.steps
    assert record.steps["each"].items == 1000
    assert pipelines.result(run, "fan_in") == [2 * i for i in range(1000)]
    marks = Counter(pipelines.marks())
    assert marks["fanin"] == 1
    assert sorted(marks[f"item:{i}"] for i in range(1000)) == [1] * 1000  # each item once
    assert took < 30, f"1,000 items took {took:.1f}s"
    status = pipelines.cli("status", run)
    assert "each                 success (1000/1000)" in status.stdout


BURST = """\
name: burst
app: pipeline_tasks
steps:
  each:
    task: pipeline_tasks.double
    map: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    args: ["{{ item }}", "{{ run.id }}"]
  left:
    task: pipeline_tasks.echo
    needs: [each]
    args: ["{{ steps.each.result | sum }}"]
    kwargs: {label: "left:{{ run.id }}"}
  right:
    task: pipeline_tasks.echo
    needs: [each]
    args: ["{{ steps.each.result | length }}"]
    kwargs: {label: "right:{{ run.id }}"}
  join:
    task: pipeline_tasks.collect
    needs: [left, right]
    args: [["{{ steps.left.result }}", "{{ steps.right.result }}"]]
    kwargs: {label: "join:{{ run.id }}"}
"""


def test_50_runs_at_once_on_two_workers_each_finish_once_with_each_fan_in_fired_once(
        pipelines):
    pipelines.worker("-c", "2")
    pipelines.worker("-c", "2")
    path = pipelines.write(BURST)
    runs = [pipelines.submit(path) for _ in range(50)]
    records = [pipelines.wait(run, timeout=60) for run in runs]
    assert [r.state for r in records] == ["success"] * 50
    time.sleep(0.3)  # a duplicate fan-in, were there one, would have run by now
    marks = Counter(pipelines.marks())
    for run in runs:
        assert pipelines.result(run, "join") == [90, 10]
        assert (marks[f"left:{run}"], marks[f"right:{run}"], marks[f"join:{run}"]) == (1, 1, 1)
        assert [marks[f"{run}:{i}"] for i in range(10)] == [1] * 10
    assert sum(marks.values()) == 50 * 13  # no task ran twice, none ran for nothing
    finished = [r.finished_at for r in records]
    assert all(f is not None for f in finished)
    listed = pipelines.cli("runs", "--pipeline", "burst", "--state", "success", "--limit", "100")
    assert len(listed.stdout.splitlines()) == 51
