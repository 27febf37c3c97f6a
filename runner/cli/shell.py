"""``runner shell``: an interactive Python shell with the app and its tasks, as ``celery
shell``: ``app`` and ``celery`` (the app, as in Celery), ``runner`` (the app too), the canvas
names, and every task of the app by its short name (``add`` for ``tasks.add``)."""

from __future__ import annotations

import code
import importlib.util
import sys

import click

from runner.cli.options import app_options


def shell_names(app, with_tasks: bool = True) -> dict:
    from runner import canvas
    from runner.task import Task

    names = {"app": app, "celery": app, "runner": app, "Task": Task,
             "signature": canvas.signature, "chain": canvas.chain, "group": canvas.group,
             "chord": canvas.chord}
    if with_tasks:
        app.import_task_modules()
        for name, task in sorted(app.tasks.items()):
            if not name.startswith("runner."):
                names[name.rpartition(".")[2]] = task
    return names


@click.command()
@app_options
@click.option("--python", "plain", is_flag=True, help="The plain Python shell, not IPython.")
@click.option("--ipython", is_flag=True, help="IPython (it must be installed).")
@click.option("--without-tasks", is_flag=True, help="Do not add the tasks' names.")
def shell(app, plain, ipython, without_tasks) -> None:
    """An interactive Python shell with app, celery, runner and the tasks defined. Reads
    stdin, so `echo 'print(add(2, 2))' | runner -A tasks shell` runs a snippet."""
    names = shell_names(app, with_tasks=not without_tasks)
    has_ipython = importlib.util.find_spec("IPython") is not None
    if ipython and not has_ipython:
        raise click.BadParameter("IPython is not installed (pip install ipython)",
                                 param_hint="--ipython")
    if ipython or (not plain and has_ipython and sys.stdin.isatty()):
        import IPython

        IPython.start_ipython(argv=[], user_ns=names)
        return
    tasks = sorted(k for k, v in names.items() if k not in ("app", "celery", "runner")
                   and getattr(v, "name", None) in app.tasks)
    banner = (f"runner shell: app, celery, runner = {app!r}; tasks: "
              f"{', '.join(tasks) or '(none)'}") if sys.stdin.isatty() else ""
    code.interact(banner=banner, local=names, exitmsg="")


COMMANDS = [shell]
