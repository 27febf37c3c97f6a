"""``runner inspect``: ask workers what they are doing (Celery's ``celery inspect``), and the
list of online workers (``runner status`` without a run id, as ``celery status``).

Human output is a table per command; ``--json`` prints the replies as one JSON object keyed
by node name, for scripts. No reply within ``--timeout`` is an error saying so (exit code 69,
Celery's), and nodes named with ``-d`` that did not answer are named.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from runner.cli.options import app_options, load_app
from runner.control.client import NOT_THERE
from runner.control.commands import COMMANDS as CONTROL_COMMANDS
from runner.control.commands import Spec

EX_UNAVAILABLE = 69  # Celery's exit code when no node replied


def destination_option(command: Callable) -> Callable:
    command = click.option("-j", "--json", "as_json", is_flag=True,
                           help="Print the replies as JSON (keyed by node).")(command)
    command = click.option("-t", "--timeout", type=float, default=1.0, show_default=True,
                           help="Seconds to wait for replies.")(command)
    return click.option("-d", "--destination", metavar="NODE[,NODE]",
                        help="Only these nodes (name@host, comma-separated).")(command)


def nodes_of(destination: str | None) -> list[str] | None:
    names = [n.strip() for n in (destination or "").split(",") if n.strip()]
    return names or None


def parse_arguments(spec: Spec, values: tuple[str, ...]) -> dict[str, Any]:
    """The command line's positional values as ``spec``'s arguments (typed)."""
    arguments: dict[str, Any] = {}
    rest = list(values)
    for name, kind in spec.args:
        if name.startswith("*"):
            arguments[name[1:]] = [_typed(spec, name[1:], kind, v) for v in rest]
            rest = []
            break
        if not rest:
            break
        arguments[name] = _typed(spec, name, kind, rest.pop(0))
    if rest:
        raise click.BadParameter(f"{spec.name} takes {_usage(spec) or 'no arguments'}; "
                                 f"unexpected: {' '.join(rest)}", param_hint="ARGUMENTS")
    return arguments


def _typed(spec: Spec, name: str, kind: type, value: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        raise click.BadParameter(f"{spec.name}: {name} must be a {kind.__name__}, got "
                                 f"{value!r}", param_hint="ARGUMENTS") from None


def _usage(spec: Spec) -> str:
    return " ".join(f"[{n[1:]}...]" if n.startswith("*") else n for n, _ in spec.args)


def command_help(kind: str) -> str:
    return "\b\n" + "\n".join(f"  {name:<16} {_usage(spec):<20} {spec.help}"
                               for name, spec in sorted(CONTROL_COMMANDS.items())
                               if spec.kind == kind)


def check_command(kind: str, name: str) -> Spec:
    spec = CONTROL_COMMANDS.get(name)
    if spec is None and name in NOT_THERE:
        raise click.BadParameter(f"{name!r}: this remote control command of Celery's is not in "
                                 f"runner (NotSupported); see the README, 'Remote control'",
                                 param_hint="COMMAND")
    if spec is None or spec.kind != kind:
        known = ", ".join(sorted(n for n, s in CONTROL_COMMANDS.items() if s.kind == kind))
        other = (f" (it is a 'runner {spec.kind}' command)" if spec is not None else "")
        raise click.BadParameter(f"no {kind} command {name!r}{other}; known: {known}",
                                 param_hint="COMMAND")
    return spec


def request(app, name: str, arguments: dict, destination: str | None,
            timeout: float) -> dict[str, Any]:
    """Broadcast and merge the replies into ``{node: reply}``."""
    replies = app.control.broadcast(name, arguments, destination=nodes_of(destination),
                                    reply=True, timeout=timeout) or []
    merged: dict[str, Any] = {}
    for entry in replies:
        merged.update(entry)
    return merged


def finish(merged: dict[str, Any], destination: str | None, timeout: float, as_json: bool,
           show: Callable[[dict[str, Any]], None]) -> None:
    """Print the replies; say (and exit non-zero) when nobody, or not every named node,
    answered."""
    if merged:
        if as_json:
            click.echo(json.dumps(merged, indent=2, sort_keys=True, default=repr))
        else:
            show(merged)
    missing = [n for n in nodes_of(destination) or [] if n not in merged]
    if not merged:
        named = f" (asked: {', '.join(missing)})" if missing else ""
        click.echo(f"Error: No nodes replied within time constraint ({timeout:g}s){named}. "
                   f"Is a worker running on this broker?", err=True)
        sys.exit(EX_UNAVAILABLE)
    if missing:
        click.echo(f"Error: no reply from {', '.join(missing)} within {timeout:g}s (no such "
                   f"node online?)", err=True)
        sys.exit(1)
    if any(isinstance(r, dict) and "error" in r for r in merged.values()):
        sys.exit(1)


# -- human output -------------------------------------------------------------------------------


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S") if ts else "-"


def _short(value: Any, width: int = 40) -> str:
    text = json.dumps(value, default=repr) if not isinstance(value, str) else value
    return text if len(text) <= width else text[:width - 3] + "..."


def _arguments(args: Any, kwargs: Any) -> str:
    """``2, 3, x=1``: the arguments as the call wrote them (hidden ones: their argsrepr)."""
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        return " ".join(str(part) for part in (args, kwargs) if part)
    return ", ".join([json.dumps(a, default=repr) for a in args]
                     + [f"{k}={json.dumps(v, default=repr)}" for k, v in kwargs.items()])


def show_requests(merged: dict[str, Any]) -> None:
    click.echo(f"{'NODE':<28} {'ID':<36} {'TASK':<24} {'STARTED':<8} {'PID':>7}  ARGS")
    for node, requests in sorted(merged.items()):
        if isinstance(requests, dict):  # an error reply
            click.echo(f"{node:<28} {_short(requests, 80)}")
            continue
        if not requests:
            click.echo(f"{node:<28} - empty -")
        for r in requests:
            click.echo(f"{node:<28} {r['id']:<36} {_short(r['name'], 24):<24} "
                       f"{_when(r.get('time_start')):<8} {r.get('worker_pid') or '-':>7}  "
                       f"{_short(_arguments(r.get('args'), r.get('kwargs')))}")


def show_stats(merged: dict[str, Any]) -> None:
    click.echo(f"{'NODE':<28} {'PID':>7} {'POOL':>5} {'PROCESSES':<24} {'UPTIME':>7} "
               f"{'PREFETCH':>8}  TASKS")
    for node, s in sorted(merged.items()):
        pool = s.get("pool", {})
        done = sum(s.get("total", {}).values())
        click.echo(f"{node:<28} {s.get('pid', '-'):>7} {pool.get('max-concurrency', '-'):>5} "
                   f"{_short(' '.join(map(str, pool.get('processes', []))), 24):<24} "
                   f"{s.get('uptime', 0):>6}s {s.get('prefetch_count', '-'):>8}  {done}")


def show_lists(merged: dict[str, Any]) -> None:
    for node, items in sorted(merged.items()):
        if isinstance(items, list):
            names = [i["name"] if isinstance(i, dict) else str(i) for i in items]
            click.echo(f"{node:<28} {', '.join(names) if names else '- empty -'}")
        else:
            click.echo(f"{node:<28} {_short(items, 100)}")


def show_replies(merged: dict[str, Any]) -> None:
    for node, reply in sorted(merged.items()):
        if reply == {} or reply == []:  # (query_task of an id no worker holds, ...)
            click.echo(f"{node:<28} - empty -")
        elif isinstance(reply, dict) and set(reply) <= {"ok", "error"}:
            label = "OK" if "ok" in reply else "ERROR"
            text = reply.get("ok", reply.get("error"))
            if isinstance(text, str) and "\n" in text:
                click.echo(f"{node}: {label}\n{text}")
            else:
                click.echo(f"{node:<28} {label:<6} {text}")
        elif isinstance(reply, dict):
            click.echo(f"{node}:")
            for key, value in sorted(reply.items()):
                click.echo(f"    {key}: {_short(value, 100)}")
        else:
            click.echo(f"{node:<28} {_short(reply, 100)}")


SHOW: dict[str, Callable[[dict[str, Any]], None]] = {
    "active": show_requests, "reserved": show_requests, "scheduled": show_requests,
    "stats": show_stats, "active_queues": show_lists, "registered": show_lists,
    "revoked": show_lists,
}


@click.command(help="Ask the workers (all, or -d NODE) what they are doing.\n\n"
               "COMMAND is one of:\n\n" + command_help("inspect"))
@app_options
@click.argument("command", metavar="COMMAND")
@click.argument("values", nargs=-1, metavar="[ARGUMENTS]...")
@destination_option
def inspect(app, command, values, destination, timeout, as_json) -> None:
    spec = check_command("inspect", command)
    merged = request(app, command, parse_arguments(spec, values), destination, timeout)
    finish(merged, destination, timeout, as_json, SHOW.get(command, show_replies))


def show_online(app_path: str | None, config_path: str | None, timeout: float = 1.0) -> None:
    """``runner status`` without a run id: the workers that answer a ping (Celery's
    ``celery status``)."""
    app = load_app(app_path, config_path, warn_default=True)
    merged = request(app, "ping", {}, None, timeout)

    def show(replies: dict[str, Any]) -> None:
        for node in sorted(replies):
            click.echo(f"->  {node}: OK")
        count = len(replies)
        click.echo(f"\n{count} node{'s' if count != 1 else ''} online.")
    finish(merged, None, timeout, False, show)


COMMANDS = [inspect]
