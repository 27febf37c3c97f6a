"""``/metrics`` in Prometheus' text format (prometheus_client), on a registry of the
dashboard's own (so nothing else of the process leaks in).

Counted from events as they come (since the dashboard started, as Prometheus counters are):
``runner_tasks_total{name,state}``, ``runner_task_runtime_seconds`` (histogram, by task
name), ``runner_beat_fires_total{entry}``, ``runner_events_total``. Read at scrape time:
``runner_workers_up``, ``runner_queue_messages{queue,state}`` (waiting, delayed, claimed, from
the last poll) and ``runner_pipeline_runs{pipeline,state}`` (the run records).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from runner.events.state import TASK_STATES, Task

#: buckets of the runtime histogram (seconds): tasks run from milliseconds to minutes
RUNTIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
                   float("inf"))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.tasks = Counter("runner_tasks", "Task events seen, by task name and the state "
                             "they moved the task to.", ["name", "state"],
                             registry=self.registry)
        self.runtime = Histogram("runner_task_runtime_seconds", "Runtime of the tasks that "
                                 "succeeded.", ["name"], buckets=RUNTIME_BUCKETS,
                                 registry=self.registry)
        self.beat_fires = Counter("runner_beat_fires", "Beat fires sent, by entry.", ["entry"],
                                  registry=self.registry)
        self.events = Counter("runner_events", "Events received by the dashboard.",
                              registry=self.registry)

    def observe(self, event: dict, changed: Any) -> None:
        """An event store observer (called under its lock: cheap)."""
        self.events.inc()
        kind = event.get("type", "")
        if isinstance(changed, Task) and kind.startswith("task-"):
            state = TASK_STATES.get(kind[len("task-"):])
            if state is not None:
                name = changed.name or "unknown"
                self.tasks.labels(name, state).inc()
                if state == "SUCCESS" and isinstance(event.get("runtime"), int | float):
                    self.runtime.labels(name).observe(float(event["runtime"]))
        elif kind == "beat-fired":
            self.beat_fires.labels(str(event.get("entry"))).inc()

    def add_scraped(self, collect) -> None:
        """Gauges computed at each scrape by ``collect()`` (a list of metric families)."""
        self.registry.register(_Scraped(collect))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Scraped:
    def __init__(self, collect) -> None:
        self._collect = collect

    def collect(self):
        yield from self._collect()

    def describe(self):
        return []


def cluster_gauges(ctx: Any) -> list[GaugeMetricFamily]:
    """Workers up, queue lengths and pipeline runs by state, now."""
    from runner.dashboard.runs import run_records

    workers = GaugeMetricFamily("runner_workers_up", "Workers online (a heartbeat within two "
                                "intervals).")
    workers.add_metric([], sum(1 for w, _f in ctx.store.workers() if w.alive))
    queues = GaugeMetricFamily("runner_queue_messages", "Messages in a queue, by state "
                               "(waiting, delayed, claimed), at the last poll.",
                               labels=["queue", "state"])
    snapshot, _history = ctx.poller.current()
    for name, counts in sorted(snapshot.queues.items()):
        for state in ("waiting", "delayed", "claimed"):
            if counts.get(state) is not None:
                queues.add_metric([name, state], counts[state])
    runs = GaugeMetricFamily("runner_pipeline_runs", "Pipeline runs in the result backend, "
                             "by pipeline and state.", labels=["pipeline", "state"])
    by: dict[tuple[str, str], int] = {}
    try:
        for record in run_records(ctx):
            by[(record.pipeline, record.state)] = by.get((record.pipeline, record.state), 0) + 1
    except Exception:  # noqa: BLE001 - the other metrics still go out
        pass
    for (pipeline, state), count in sorted(by.items()):
        runs.add_metric([pipeline, state], count)
    return [workers, queues, runs]
