"""``runner worker``: start a worker, as ``celery worker``."""

from __future__ import annotations

import os
import socket

import click

from runner.cli.base import app_options
from runner.config.urls import mask_url
from runner.log import setup_logging_subsystem
from runner.version import __version__

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"


@click.command()
@app_options
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=None,
              help="Child processes (or threads); default: worker_concurrency or CPU count.")
@click.option("-P", "--pool", type=click.Choice(["prefork", "threads", "solo"]), default=None,
              help="Pool implementation; default: worker_pool.")
@click.option("-Q", "--queues", default=None, help="Comma-separated queues to consume.")
@click.option("-n", "--hostname", default=None, help="Node name (default celery@HOST).")
@click.option("-l", "--loglevel", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                                case_sensitive=False))
@click.option("--max-tasks-per-child", type=click.IntRange(min=1), default=None)
@click.option("--max-memory-per-child", type=click.IntRange(min=1), default=None,
              help="KiB of resident memory after which a child is replaced.")
@click.option("--prefetch-multiplier", type=click.IntRange(min=0), default=None)
@click.option("--quiet", is_flag=True, help="Do not print the start banner.")
def worker(app, concurrency, pool, queues, hostname, loglevel, max_tasks_per_child,
           max_memory_per_child, prefetch_multiplier, quiet) -> None:
    """Start a worker: runs the tasks of the app given with -A."""
    from runner.worker.worker import Worker, WorkerOptions

    setup_logging_subsystem(app, loglevel, format=LOG_FORMAT)
    conf = app.conf
    app.import_task_modules()
    options = WorkerOptions(
        concurrency=concurrency or conf.worker_concurrency or os.cpu_count() or 1,
        pool=pool or conf.worker_pool,
        queues=[q.strip() for q in queues.split(",") if q.strip()] if queues else
        _default_queues(conf),
        hostname=(hostname or f"celery@{socket.gethostname()}").replace(
            "%h", socket.gethostname()),
        prefetch_multiplier=(prefetch_multiplier if prefetch_multiplier is not None
                             else conf.worker_prefetch_multiplier),
        max_tasks_per_child=max_tasks_per_child or conf.worker_max_tasks_per_child,
        max_memory_per_child=max_memory_per_child or conf.worker_max_memory_per_child)
    instance = Worker(app, options)  # opens broker and backend: errors before the banner
    if not quiet:
        click.echo(banner(app, options), err=True)
    try:
        instance.run()
    finally:
        app.close()  # what is still handed over to a connection (AMQP acks) goes out first


def _default_queues(conf) -> list[str]:
    if conf.task_queues:
        return [q.name for q in conf.task_queues]
    return [conf.task_default_queue]


def banner(app, options) -> str:
    tasks = sorted(name for name in app.tasks if not name.startswith("runner."))
    lines = [
        f" -------------- {options.hostname} v{__version__}",
        "--- ***** ----- ",
        "-- ******* ---- [config]",
        f"- *** --- * --- .> app:         {app.main or '__main__'}:{id(app):#x}",
        f"- ** ---------- .> transport:   {mask_url(app.broker_url)}",
        f"- ** ---------- .> results:     {mask_url(app.backend_url)}",
        f"- *** --- * --- .> concurrency: {options.concurrency} ({options.pool})",
        f"-- ******* ---- .> prefetch:    {options.prefetch_multiplier} x concurrency",
        "--- ***** ----- ",
        " -------------- [queues]",
        *[f"                .> {q}" for q in options.queues],
        "",
        "[tasks]",
        *[f"  . {name}" for name in tasks],
        "",
    ]
    return "\n".join(lines)


COMMANDS = [worker]
