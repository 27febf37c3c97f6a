"""``runner events``: watch the cluster's events (Celery's ``celery events``).

- default: a live terminal view (rich) of the workers (online or offline, active, processed,
  load, last heartbeat) and the latest tasks (state, worker, runtime), kept by
  ``app.events.State``;
- ``--dump``: one line per event, as ``celery events --dump``;
- ``--json``: one JSON object per event and line, for scripts.

Workers send worker events always, task events with ``-E`` (``worker_send_task_events``),
and ``task-sent`` where ``task_send_sent_event`` is set in the sending process.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import click

from runner.cli.options import app_options

SKIP_FIELDS = {"type", "hostname", "timestamp", "utcoffset", "pid", "clock", "local_received",
               "uuid", "name"}


#: task id -> name, from the events that carry it (task-sent, task-received), for the lines of
#: those that do not (task-started, -succeeded...), as Celery's dump shows them; bounded
_NAMES: dict[str, str] = {}
NAMES_KEPT = 10_000


def dump_line(event: dict) -> str:
    when = datetime.fromtimestamp(float(event.get("timestamp") or time.time()), UTC)
    kind = event["type"].replace("-", " ")
    if event["type"].startswith("task-"):
        uuid, name = event.get("uuid"), event.get("name")
        if name and uuid:
            if len(_NAMES) >= NAMES_KEPT:
                _NAMES.pop(next(iter(_NAMES)))
            _NAMES[uuid] = name
        what = f"{name or _NAMES.get(uuid) or ''}({uuid})"
    else:
        what = ""
    details = " ".join(f"{k}={v}" for k, v in event.items()
                       if k not in SKIP_FIELDS and v is not None)
    return (f"{event.get('hostname')} [{when.isoformat(sep=' ', timespec='microseconds')}] "
            f"{kind}: {what} {details}".rstrip())


@click.command()
@app_options
@click.option("-d", "--dump", is_flag=True, help="Print one line per event.")
@click.option("-j", "--json", "as_json", is_flag=True, help="Print each event as JSON.")
@click.option("--timeout", type=float, default=None, metavar="SECONDS",
              help="Stop after this long (default: run until Ctrl-C).")
@click.option("--limit", type=int, default=None, metavar="N", help="Stop after N events.")
@click.option("-F", "--frequency", "--freq", "frequency", type=float, default=1.0,
              show_default=True, help="Seconds between two refreshes of the live view.")
def events(app, dump, as_json, timeout, limit, frequency) -> None:
    """Watch workers and tasks: a live view, --dump (one line per event) or --json."""
    receiver_handlers: dict[str, Any] = {}
    if as_json:
        receiver_handlers["*"] = lambda event: click.echo(json.dumps(event, default=repr))
    elif dump:
        receiver_handlers["*"] = lambda event: click.echo(dump_line(event))
    else:
        return live(app, timeout, limit, frequency)
    receiver = app.events.Receiver(handlers=receiver_handlers)
    try:
        receiver.capture(limit=limit, timeout=timeout)
    except KeyboardInterrupt:
        pass


def live(app, timeout: float | None, limit: int | None, frequency: float) -> None:
    """The live view: events are received in a thread into a State, drawn every
    ``frequency`` seconds (so a worker that falls silent turns OFFLINE on screen)."""
    import threading

    from rich.live import Live

    state = app.events.State()
    receiver = app.events.Receiver(handlers={"*": state.event})
    thread = threading.Thread(target=receiver.capture, args=(limit, timeout), daemon=True)
    thread.start()
    try:
        with Live(render(state), refresh_per_second=4) as view:
            while thread.is_alive():
                thread.join(frequency)
                view.update(render(state))
    except KeyboardInterrupt:
        receiver.should_stop = True


def render(state) -> Any:
    from rich.console import Group
    from rich.table import Table

    workers = Table(title="Workers", expand=True)
    for column in ("WORKER", "STATUS", "ACTIVE", "PROCESSED", "LOAD", "LAST HEARTBEAT"):
        workers.add_column(column)
    for name, w in sorted(state.workers.items()):
        last = (datetime.fromtimestamp(w.heartbeats[-1], UTC).strftime("%H:%M:%S")
                if w.heartbeats else "-")
        status = "[green]ONLINE[/]" if w.alive else "[red]OFFLINE[/]"
        workers.add_row(name, status, str(w.active if w.active is not None else "-"),
                        str(w.processed if w.processed is not None else "-"),
                        " ".join(map(str, w.loadavg or [])) or "-", last)
    tasks = Table(title=f"Tasks (latest of {state.task_count})", expand=True)
    for column in ("ID", "NAME", "STATE", "WORKER", "RUNTIME", "RESULT / EXCEPTION"):
        tasks.add_column(column)
    for uuid, t in state.tasks_by_time(limit=20):
        tasks.add_row(uuid, t.name or "-", t.state, t.worker or "-",
                      f"{t.runtime:.3f}s" if t.runtime is not None else "-",
                      (t.exception or t.result or "")[:60])
    return Group(workers, tasks)


COMMANDS = [events]
