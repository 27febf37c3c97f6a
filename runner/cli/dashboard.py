"""``runner dashboard``: the web UI (Flower's place, plus pipeline runs); see
:mod:`runner.dashboard`."""

from __future__ import annotations

import click

from runner.cli.options import app_options
from runner.config.urls import mask_url


@click.command()
@app_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; another than 127.0.0.1 needs --auth or --token.")
@click.option("--port", type=click.IntRange(0, 65535), default=5555, show_default=True,
              help="Port to listen on; 0 picks a free one (the banner says which).")
@click.option("--auth", default=None, metavar="USER:PASSWORD", envvar="RUNNER_DASHBOARD_AUTH",
              help="Log in with this user and password (kept only hashed).")
@click.option("--token", default=None, envvar="RUNNER_DASHBOARD_TOKEN",
              help="Log in with this token (scripts: Authorization: Bearer TOKEN).")
@click.option("--hide-args", is_flag=True,
              help="Show tasks' args, kwargs and results, and steps' results, as ***.")
@click.option("--max-tasks", type=click.IntRange(min=1), default=10000, show_default=True,
              help="Tasks kept in memory (the oldest are forgotten), as Flower's.")
@click.option("--pipelines", "pipelines_dir", default=None, metavar="DIR",
              type=click.Path(file_okay=False),
              help="Folder of pipeline files: submit forms and their triggers "
                   "(default: ./pipelines when there is one).")
@click.option("--refresh", type=click.FloatRange(min=0.2), default=1.0, show_default=True,
              help="Seconds between two refreshes of a live page.")
def dashboard(app, host, port, auth, token, hide_args, max_tasks, pipelines_dir,
              refresh) -> None:
    """Serve the web dashboard: workers, tasks, queues, pipeline runs, triggers,
    /metrics and the JSON API (/api/openapi.json)."""
    import os

    from runner.dashboard.context import Options
    from runner.dashboard.server import Dashboard

    if pipelines_dir is None and os.path.isdir("pipelines"):
        pipelines_dir = "pipelines"
    options = Options(host=host, port=port, auth=auth, token=token, hide_args=hide_args,
                      max_tasks=max_tasks, pipelines=pipelines_dir, refresh=refresh)
    board = Dashboard(app, options)
    sock = board.bind()  # (a port in use: one line, exit 2, before any banner)
    click.echo(f"runner dashboard on {board.url}/ (broker {mask_url(app.broker_url)}; "
               f"{'login required' if auth or token else 'no login: local only'})")
    board.serve(sock)


COMMANDS = [dashboard]
