"""``runner worker``: start a worker, as ``celery worker`` (options with Celery's names)."""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

import click

from runner.cli import daemon
from runner.cli.nodenames import NodeLogFile, host_format, node_format
from runner.cli.options import app_options, global_options, known_queues, split_names
from runner.config.urls import mask_url
from runner.exceptions import ConfigError, RunnerError
from runner.log import setup_logging_subsystem
from runner.utils.aio import loop_kind
from runner.version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from runner.worker.held import WorkerOptions

LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
logger = logging.getLogger("runner.worker")


def parse_autoscale(ctx, param, value: str | None) -> tuple[int, int] | None:
    """``MAX,MIN`` (or ``MAX``: MIN 0), as Celery's ``--autoscale``."""
    if value is None:
        return None
    parts = value.split(",")
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        numbers = []
    if len(parts) > 2 or not numbers or min(numbers) < 0 or numbers[0] < 1 or (
            len(numbers) == 2 and numbers[1] > numbers[0]):
        raise click.BadParameter(f"{value!r} is not MAX,MIN (whole numbers, MAX >= 1, "
                                 f"MIN <= MAX; e.g. --autoscale=10,3)")
    return numbers[0], numbers[1] if len(numbers) == 2 else 0


#: tasks in flight on the asyncio pool's loop when neither -c nor worker_concurrency says
ASYNCIO_CONCURRENCY = 100


@click.command()
@app_options
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=None,
              help="Child processes (or threads; with -P asyncio, tasks in flight on the event "
                   "loop of each process); default: worker_concurrency, else the CPU count "
                   "(asyncio: 100).")
@click.option("--processes", type=click.IntRange(min=0), default=None,
              help="With -P asyncio: processes, each running -c tasks at once on its event "
                   "loop; 0: the loop runs in the worker's own process. Default: "
                   "worker_processes (1).")
@click.option("--loop", type=click.Choice(["auto", "asyncio", "uvloop"]), default=None,
              help="With -P asyncio: the event loop (auto: uvloop where installed). Default: "
                   "worker_event_loop (auto).")
@click.option("-P", "--pool", type=click.Choice(["prefork", "threads", "solo", "asyncio"]),
              default=None,
              help="Pool implementation; default: worker_pool.")
@click.option("-Q", "--queues", default=None, help="Comma-separated queues to consume.")
@click.option("-X", "--exclude-queues", default=None,
              help="Comma-separated queues not to consume (of -Q, or of the known queues).")
@click.option("-n", "--hostname", default=None,
              help="Node name (default celery@%h; %h, %n, %d are expanded).")
@click.option("-l", "--loglevel", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                                case_sensitive=False))
@click.option("-f", "--logfile", default=None, metavar="PATH",
              help="Log here instead of stderr (%n, %h, %d, %p, %i, %I are expanded: with "
                   "%i or %I each prefork child logs to its own file).")
@click.option("--pidfile", default=None, metavar="PATH",
              help="Write the pid here; refuse to start while it names a live process.")
@click.option("-D", "--detach", is_flag=True, help="Run in the background as a daemon.")
@click.option("-B", "--beat", "embed_beat", is_flag=True,
              help="Run beat in the worker too (the leader lease keeps it to one sender).")
@click.option("--autoscale", callback=parse_autoscale, metavar="MAX,MIN",
              help="Grow the prefork pool up to MAX processes with the backlog, shrink it to "
                   "MIN when idle (AUTOSCALE_KEEPALIVE seconds, 30).")
@click.option("-O", "optimization", type=click.Choice(["default", "fair"]), default=None,
              help="Accepted: runner's scheduling is always fair.")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Hard time limit of each task, seconds (task_time_limit).")
@click.option("--soft-time-limit", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Soft time limit of each task, seconds (task_soft_time_limit).")
@click.option("--max-tasks-per-child", type=click.IntRange(min=1), default=None)
@click.option("--max-memory-per-child", type=click.IntRange(min=1), default=None,
              help="KiB of resident memory after which a child is replaced.")
@click.option("--prefetch-multiplier", type=click.IntRange(min=0), default=None,
              help="Messages reserved per process; 0: no limit, as Celery's.")
@click.option("-q", "--quiet", is_flag=True, help="Do not print the start banner.")
@click.option("-I", "--include", default=None, help="Comma-separated modules to import too.")
@click.option("--purge", "--discard", "purge_first", is_flag=True,
              help="Delete the waiting messages of the consumed queues before starting.")
@click.option("-s", "--schedule", "schedule_file", default=None, metavar="PATH",
              help="Accepted for Celery's sake: -B keeps its state in the result backend.")
@click.option("-E", "--task-events", is_flag=True,
              help="Send task events for monitors (worker_send_task_events).")
@click.option("--without-gossip", is_flag=True, help="Accepted: runner has no gossip.")
@click.option("--without-mingle", is_flag=True, help="Accepted: runner has no mingle.")
@click.option("--without-heartbeat", is_flag=True,
              help="Send no worker-heartbeat events (monitors then show the worker offline).")
def worker(app, **given: Any) -> None:
    """Start a worker: runs the tasks of the app given with -A."""
    _configure(app.conf, given)
    options = worker_options(app.conf, given)
    pidfile, detach, logfile = given["pidfile"], given["detach"], given["logfile"]
    pid = daemon.Pidfile(node_format(pidfile, options.hostname)) if pidfile else None
    if pid is not None:
        pid.check()  # before detaching: the user sees the refusal
    if detach:
        daemon.detach()
    if pid is not None:
        pid.acquire()
    try:
        _setup_logging(app, given["loglevel"], logfile, options.hostname)
        _note_options(options, given)
        if given["purge_first"]:
            count = app.broker.purge(options.queues)
            logger.warning("--purge: deleted %d waiting message(s) from %s", count,
                           ", ".join(options.queues))
        _run(app, options, given["embed_beat"],
             given["quiet"] or global_options().quiet or detach)
    except RunnerError as exc:
        if detach or logfile:  # (stderr may be /dev/null: say it where the logs go)
            logger.error("%s", exc)
        raise
    finally:
        if pid is not None:
            pid.release()


#: options accepted so that a Celery command line starts unchanged, and logged as doing nothing
NO_EFFECT = {"schedule_file": "-s/--schedule",
             "without_gossip": "--without-gossip", "without_mingle": "--without-mingle"}


def _configure(conf, given: dict[str, Any]) -> None:
    """The settings the options stand for: ``-I``, ``--time-limit``, ``--soft-time-limit``."""
    if given["task_events"]:
        conf.update(worker_send_task_events=True)
    if given["loop"]:
        conf.update(worker_event_loop=given["loop"])
    if given["include"]:
        conf.update(include=[*(conf.include or ()), *split_names(given["include"])])
    limits = {key: given[option] for key, option in (("task_time_limit", "time_limit"),
                                                     ("task_soft_time_limit", "soft_time_limit"))
              if given[option]}
    if limits:
        conf.update(limits)  # (checked together: the soft limit must be below the hard one)


def worker_options(conf, given: dict[str, Any]) -> WorkerOptions:
    """The options, else the settings: what the worker runs with."""
    from runner.worker.held import WorkerOptions

    excluded = split_names(given["exclude_queues"])
    consumed = [q for q in (split_names(given["queues"]) or known_queues(conf))
                if q not in excluded]
    if not consumed:
        raise ConfigError(f"-X {given['exclude_queues']}: excludes every queue; nothing to "
                          f"consume")
    autoscale = given["autoscale"]
    if autoscale:  # starts with MIN (at least one process, to wait on the broker)
        autoscale = (autoscale[0], max(1, autoscale[1]))
    prefetch = given["prefetch_multiplier"]
    pool = given["pool"] or conf.worker_pool
    return WorkerOptions(
        concurrency=(autoscale[1] if autoscale else given["concurrency"])
        or conf.worker_concurrency
        or (ASYNCIO_CONCURRENCY if pool == "asyncio" else os.cpu_count() or 1),
        autoscale=autoscale,
        pool=pool,
        queues=consumed,
        hostname=host_format(given["hostname"] or "celery@%h"),
        prefetch_multiplier=prefetch if prefetch is not None else conf.worker_prefetch_multiplier,
        max_tasks_per_child=given["max_tasks_per_child"] or conf.worker_max_tasks_per_child,
        max_memory_per_child=given["max_memory_per_child"] or conf.worker_max_memory_per_child,
        heartbeat=not given.get("without_heartbeat"),
        processes=(given["processes"] if given.get("processes") is not None
                   else conf.worker_processes))


def _setup_logging(app, loglevel: str, logfile: str | None, nodename: str) -> None:
    """Logging as Celery's worker sets it up (see runner.log: setup_logging receivers take
    over, worker_hijack_root_logger), to ``--logfile`` (one file per process with %i)."""
    def make_handler() -> logging.Handler:
        return NodeLogFile(logfile, nodename) if logfile else logging.StreamHandler(sys.stderr)
    setup_logging_subsystem(app, loglevel, logfile, format=LOG_FORMAT,
                            make_handler=make_handler)


def _note_options(options, given: dict[str, Any]) -> None:
    autoscale = options.autoscale
    if autoscale and options.pool != "prefork":
        logger.warning("--autoscale: only the prefork pool scales; the %s pool keeps its "
                       "concurrency of %d", options.pool, options.concurrency)
    elif autoscale:
        logger.info("--autoscale: %d to %d processes, starting with %d", autoscale[1],
                    autoscale[0], options.concurrency)
    if (options.max_tasks_per_child or options.max_memory_per_child) and (
            options.pool in ("threads", "solo")
            or (options.pool == "asyncio" and options.processes == 0)):
        logger.warning("--max-tasks-per-child / --max-memory-per-child: the %s pool has no "
                       "process of its own to replace; they have no effect", options.pool)
    if given.get("processes") is not None and options.pool != "asyncio":
        logger.warning("--processes: only the asyncio pool has it; with -P %s, -c says how "
                       "many processes or threads run tasks", options.pool)
    if given["optimization"]:
        logger.info("-O %s: accepted; runner's scheduling is always fair (a child takes "
                    "long tasks one at a time)", given["optimization"])
    ignored = [flag for name, flag in NO_EFFECT.items() if given[name]]
    if ignored:
        logger.info("accepted and without effect in runner: %s (see README, The worker)",
                    ", ".join(ignored))


def _run(app, options, embed_beat: bool, quiet: bool) -> None:
    from runner.worker.collector import threshold_for, tune_collector
    from runner.worker.worker import Worker

    app.import_task_modules()
    if options.pool == "asyncio":
        loop_kind(app.conf.worker_event_loop)  # (uvloop asked for and missing: say so now)
    instance = Worker(app, options)  # opens broker and backend: errors before the banner
    scheduler = _embedded_beat(app) if embed_beat else None
    if not quiet:
        click.echo(banner(app, options, embed_beat), err=True)
    stop = threading.Event()
    beat = None
    if scheduler is not None:
        beat = threading.Thread(target=scheduler.run, args=(stop,), name="runner-beat",
                                daemon=True)
        beat.start()
    # (here: in the worker's own process, not in a test's)
    tune_collector(threshold_for(app.conf.worker_gc_threshold, options.pool))
    try:
        instance.run()
    finally:
        if beat is not None:
            stop.set()
            beat.join(10)  # gives the lease up, so another -B worker leads at once
        app.close()  # what is still handed over to a connection (AMQP acks) goes out first


def _embedded_beat(app):
    """Beat for a thread of the worker's main process (``-B``). Several ``-B`` workers (and
    ``runner beat`` processes) share the leader lease: one sends, the others stand by."""
    from runner.beat.entries import build_entries
    from runner.beat.scheduler import Beat

    if not app.backend.keeps_state:
        raise ConfigError(f"-B: beat keeps its lease and schedule in the result backend, and "
                          f"{mask_url(app.backend_url)} keeps none; set result_backend to "
                          f"redis:// or sqlite:///")
    scheduler = Beat(app, build_entries(app, None))
    logger.info("beat %s: embedded (-B), %d entr%s", scheduler.owner, len(scheduler.entries),
                "y" if len(scheduler.entries) == 1 else "ies")
    return scheduler


def banner(app, options, embed_beat: bool = False) -> str:
    tasks = sorted(name for name in app.tasks if not name.startswith("runner."))
    follows = " (follows the broker)" if app.backend_follows_broker else ""
    lines = [
        f" -------------- {options.hostname} v{__version__}",
        "--- ***** ----- ",
        "-- ******* ---- [config]",
        f"- *** --- * --- .> app:         {app.main or '__main__'}:{id(app):#x}",
        f"- ** ---------- .> transport:   {mask_url(app.broker_url)}",
        f"- ** ---------- .> results:     {mask_url(app.backend_url)}{follows}",
        f"- *** --- * --- .> concurrency: {_concurrency_text(options, app.conf)}",
        f"-- ******* ---- .> prefetch:    {_prefetch_text(options)}",
        f"--- ***** ----- .> beat:        {'embedded (-B)' if embed_beat else 'off'}",
        " -------------- [queues]",
        *[f"                .> {q}" for q in options.queues],
        "",
        "[tasks]",
        *[f"  . {name}" for name in tasks],
        "",
    ]
    return "\n".join(lines)


def _concurrency_text(options, conf) -> str:
    if options.autoscale and options.pool == "prefork":
        high, low = options.autoscale
        return f"{{min={low}, max={high}}} ({options.pool}, autoscale)"
    if options.pool == "asyncio":
        where = (f"x {options.processes} process{'es' if options.processes > 1 else ''}"
                 if options.processes else "in the worker's process")
        return (f"{options.concurrency} in flight {where} (asyncio, "
                f"{loop_kind(conf.worker_event_loop)} loop)")
    return f"{options.concurrency} ({options.pool})"


def _prefetch_text(options) -> str:
    if options.prefetch_multiplier == 0:
        return f"no limit (0; at most {options.prefetch} per process)"
    return f"{options.prefetch_multiplier} x concurrency"


COMMANDS = [worker]
