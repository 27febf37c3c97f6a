"""``runner queues``: each queue's messages waiting, delayed (countdown/eta), claimed (unacked)
and the workers consuming it, on every transport.

Queues shown: ``-Q``, else those the app knows (``task_queues`` / ``task_default_queue``),
those the broker holds messages in, and those online workers consume. Consumers are the
workers that answer ``active_queues`` within ``--timeout``. Where the transport cannot count
(RabbitMQ without its management plugin: unacked; delayed per queue), ``-`` is shown, and for
RabbitMQ the workers' own count of the messages they hold is used for CLAIMED.
"""

from __future__ import annotations

import json
from typing import Any

import click

from runner.cli.options import app_options, known_queues, split_names


def workers_queues(app, timeout: float) -> dict[str, list[str]]:
    """node -> the queues it consumes (workers answering within ``timeout``)."""
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    return {node: [q["name"] for q in queues] for node, queues in replies.items()
            if isinstance(queues, list)}


def held_by_workers(app, timeout: float) -> dict[str, int]:
    """queue -> messages the online workers hold unacked (running or prefetched)."""
    held: dict[str, int] = {}
    inspect = app.control.inspect(timeout=timeout)
    for replies in (inspect.active() or {}, inspect.reserved() or {}):
        for requests in replies.values():
            for request in requests if isinstance(requests, list) else []:
                if request.get("acknowledged"):
                    continue
                queue = request.get("delivery_info", {}).get("routing_key")
                held[queue] = held.get(queue, 0) + 1
    return held


@click.command()
@app_options
@click.option("-Q", "--queues", default=None, help="Comma-separated queues (default: all "
              "known, in the broker, or consumed).")
@click.option("-t", "--timeout", type=float, default=1.0, show_default=True,
              help="Seconds to wait for the workers' replies (consumers).")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print JSON, keyed by queue.")
def queues(app, queues, timeout, as_json) -> None:
    """Messages waiting, delayed and claimed per queue, and their consumers."""
    broker = app.broker
    consuming = workers_queues(app, timeout)
    names = split_names(queues)
    if not names:
        names = sorted({*known_queues(app.conf), *broker.queue_names(),
                        *(q for qs in consuming.values() for q in qs)})
    counts = broker.queue_counts(names)
    held = None
    if any(c.unacked is None for c in counts.values()) and consuming:
        held = held_by_workers(app, timeout)
    table: dict[str, dict[str, Any]] = {}
    for name in names:
        c = counts[name]
        unacked = c.unacked if c.unacked is not None or held is None else held.get(name, 0)
        table[name] = {"waiting": c.waiting, "delayed": c.delayed, "claimed": unacked,
                       "consumers": sorted(n for n, qs in consuming.items() if name in qs)}
    delayed_elsewhere = (broker.delayed_count() if hasattr(broker, "delayed_count")
                         and any(c.delayed is None for c in counts.values()) else None)
    if as_json:
        out: dict[str, Any] = {"queues": table}
        if delayed_elsewhere is not None:
            out["delayed_not_yet_in_a_queue"] = delayed_elsewhere
        click.echo(json.dumps(out, indent=2, sort_keys=True))
        return
    width = max([5, *map(len, names)])
    click.echo(f"{'QUEUE':<{width}} {'WAITING':>8} {'DELAYED':>8} {'CLAIMED':>8} "
               f"{'CONSUMERS':>9}  WORKERS")
    for name, row in table.items():
        click.echo(f"{name:<{width}} {row['waiting']:>8} {_n(row['delayed']):>8} "
                   f"{_n(row['claimed']):>8} {len(row['consumers']):>9}  "
                   f"{', '.join(row['consumers']) or '-'}")
    if delayed_elsewhere is not None:
        click.echo(f"\n{delayed_elsewhere} delayed message(s) in RabbitMQ's delay queues "
                   f"(runner.delay.*): their queue shows them once they are due.")
    if not consuming:
        click.echo(f"\n(no worker answered within {timeout:g}s: no consumers shown)")


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


COMMANDS = [queues]
