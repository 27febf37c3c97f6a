"""Read settings from where users keep them: Python objects/modules, YAML/JSON files, env vars.

Every reader returns a :class:`Layer`: the values it found, where each came from (file:line when
it can tell) and the problems it met (unknown names, mixed old/new names). Readers never raise
for a bad *setting*; :class:`~runner.config.conf.Conf` gathers every layer's problems plus the
model's and reports them all at once. They do raise :class:`ConfigError` when the source itself
cannot be read (a module that fails to import, a file that is not a YAML mapping).
"""

from __future__ import annotations

import ast
import difflib
import importlib
import inspect
import json
import logging
import os
import sys
import textwrap
import types
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.config import safe_yaml
from runner.config.celery_only import CELERY_ONLY, CELERY_REFUSED
from runner.config.settings import SETTING_NAMES, Settings
from runner.exceptions import ConfigError, ConfigIssue

logger = logging.getLogger("runner.config")

ENV_PREFIX = "RUNNER_"
ENV_CONFIG = "RUNNER_CONFIG"
MAX_SETTINGS_BYTES = 2**20  # a settings file is a page of YAML; this leaves room for queues

# Celery's pre-4.0 UPPERCASE names -> today's names (celery/app/defaults.py and the table in
# Celery's configuration guide; both spellings are kept where the two disagree).
OLD_NAMES: dict[str, str] = {
    "BROKER_URL": "broker_url",
    "BROKER_TRANSPORT_OPTIONS": "broker_transport_options",
    "BROKER_CONNECTION_TIMEOUT": "broker_connection_timeout",
    "BROKER_CONNECTION_RETRY": "broker_connection_retry",
    "BROKER_CONNECTION_MAX_RETRIES": "broker_connection_max_retries",
    "BROKER_POOL_LIMIT": "broker_pool_limit",
    "CELERY_RESULT_BACKEND": "result_backend",
    "CELERY_RESULT_EXPIRES": "result_expires",
    "CELERY_TASK_RESULT_EXPIRES": "result_expires",
    "CELERY_RESULT_SERIALIZER": "result_serializer",
    "CELERY_RESULT_PERSISTENT": "result_persistent",
    "CELERY_TASK_SERIALIZER": "task_serializer",
    "CELERY_ACCEPT_CONTENT": "accept_content",
    "CELERY_TIMEZONE": "timezone",
    "CELERY_ENABLE_UTC": "enable_utc",
    "CELERY_IMPORTS": "imports",
    "CELERY_INCLUDE": "include",
    "CELERY_DEFAULT_QUEUE": "task_default_queue",
    "CELERY_QUEUES": "task_queues",
    "CELERY_ROUTES": "task_routes",
    "CELERY_CREATE_MISSING_QUEUES": "task_create_missing_queues",
    "CELERY_ACKS_LATE": "task_acks_late",
    "CELERY_ACKS_ON_FAILURE_OR_TIMEOUT": "task_acks_on_failure_or_timeout",
    "CELERY_ALWAYS_EAGER": "task_always_eager",
    "CELERY_TASK_ALWAYS_EAGER": "task_always_eager",
    "CELERY_EAGER_PROPAGATES_EXCEPTIONS": "task_eager_propagates",
    "CELERY_EAGER_PROPAGATES": "task_eager_propagates",
    "CELERY_IGNORE_RESULT": "task_ignore_result",
    "CELERY_TRACK_STARTED": "task_track_started",
    "CELERY_TASK_TRACK_STARTED": "task_track_started",
    "CELERY_MESSAGE_COMPRESSION": "task_compression",
    "CELERY_COMPRESSION": "task_compression",
    "CELERY_TASK_PUBLISH_RETRY": "task_publish_retry",
    "CELERY_PUBLISH_RETRY": "task_publish_retry",
    "CELERY_TASK_PUBLISH_RETRY_POLICY": "task_publish_retry_policy",
    "CELERY_PUBLISH_RETRY_POLICY": "task_publish_retry_policy",
    "CELERY_SEND_TASK_SENT_EVENT": "task_send_sent_event",
    "CELERY_SEND_SENT_EVENT": "task_send_sent_event",
    "CELERY_ANNOTATIONS": "task_annotations",
    "CELERY_TASK_REJECT_ON_WORKER_LOST": "task_reject_on_worker_lost",
    "CELERYD_TASK_TIME_LIMIT": "task_time_limit",
    "CELERYD_TIME_LIMIT": "task_time_limit",
    "CELERYD_TASK_SOFT_TIME_LIMIT": "task_soft_time_limit",
    "CELERYD_SOFT_TIME_LIMIT": "task_soft_time_limit",
    "CELERYD_CONCURRENCY": "worker_concurrency",
    "CELERYD_POOL": "worker_pool",
    "CELERYD_PREFETCH_MULTIPLIER": "worker_prefetch_multiplier",
    "CELERYD_MAX_TASKS_PER_CHILD": "worker_max_tasks_per_child",
    "CELERYD_MAX_MEMORY_PER_CHILD": "worker_max_memory_per_child",
    "CELERYD_HIJACK_ROOT_LOGGER": "worker_hijack_root_logger",
    "CELERY_SEND_EVENTS": "worker_send_task_events",
    "CELERYBEAT_SCHEDULE": "beat_schedule",
    "CELERYBEAT_MAX_LOOP_INTERVAL": "beat_max_loop_interval",
}
_NEW_TO_OLD: dict[str, str] = {}
for _old, _new in OLD_NAMES.items():
    _NEW_TO_OLD.setdefault(_new, _old)


@dataclass
class Layer:
    """Settings read from one place, with where each came from and what was wrong."""

    label: str
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    issues: list[ConfigIssue] = field(default_factory=list)

    def add(self, key: str, value: Any, source: str) -> None:
        self.values[key] = value
        self.sources[key] = source


def unknown_setting(name: str, source: str) -> ConfigIssue | None:
    """The issue of ``name``, which is no setting of runner's; None (after one warning) for a
    setting of Celery's that runner does not use, so that a real Celery config loads."""
    if name.lower() in CELERY_ONLY:
        warnings.warn(f"{source}: {name} is a Celery setting runner does not use; it is "
                      f"ignored", stacklevel=4)
        return None
    return ConfigIssue(name, did_you_mean(name), source)


def did_you_mean(name: str) -> str:
    """``"unknown setting; did you mean task_serializer?"`` (or without the hint)."""
    if name.lower() in CELERY_REFUSED:
        return (f"a Celery setting runner does not support: {CELERY_REFUSED[name.lower()]} "
                f"(see the README, 'Coming from Celery')")
    if name.upper() in OLD_NAMES:
        return f"unknown setting; did you mean {OLD_NAMES[name.upper()]}?"
    guess = difflib.get_close_matches(name.lower(), SETTING_NAMES, n=1, cutoff=0.6)
    return "unknown setting" + (f"; did you mean {guess[0]}?" if guess else "")


def display_path(path: str | os.PathLike) -> str:
    """A path as a user wants to read it: relative to the working directory when inside it."""
    path = os.fspath(path)
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative


# --- Python objects and modules -----------------------------------------------------------


def import_object(name: str) -> Any:
    """Import ``"pkg.mod"``, ``"pkg.mod:attr"`` or ``"pkg.mod.attr"``.

    Raises ImportError when the module does not exist (so ``silent=True`` can ignore it) and
    :class:`ConfigError` naming the module when importing it failed inside.
    """
    module_name, _, attr = name.partition(":")
    try:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            parent, _, tail = module_name.rpartition(".")
            if attr or exc.name != module_name or not parent:
                raise
            module, attr = importlib.import_module(parent), tail
    except ImportError:
        raise
    except Exception as exc:  # an error inside the config module: say which and where
        raise ConfigError(f"config module {module_name!r} failed to import: "
                          f"{type(exc).__name__}: {exc}{_where(exc)}") from exc
    if not attr:
        return module
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"config module {module_name!r} has no attribute {attr!r}") from None


def _where(exc: BaseException) -> str:
    frames = [f for f in traceback_frames(exc) if "importlib" not in f[0]]
    return f" (at {display_path(frames[-1][0])}:{frames[-1][1]})" if frames else ""


def traceback_frames(exc: BaseException) -> list[tuple[str, int]]:
    tb, frames = exc.__traceback__, []
    while tb is not None:
        frames.append((tb.tb_frame.f_code.co_filename, tb.tb_lineno))
        tb = tb.tb_next
    if isinstance(exc, SyntaxError) and exc.filename:
        frames.append((exc.filename, exc.lineno or 0))
    return frames


def _assignment_lines(obj: Any) -> tuple[str | None, dict[str, int]]:
    """The file ``obj`` was defined in and the line of each top-level ``name = ...`` in it."""
    try:
        if isinstance(obj, types.ModuleType):
            filename = getattr(obj, "__file__", None)
            if not filename or not filename.endswith(".py"):
                return filename, {}
            body, offset = Path(filename).read_text(encoding="utf-8"), 0
        elif inspect.isclass(obj):
            filename = inspect.getsourcefile(obj)
            lines, start = inspect.getsourcelines(obj)
            body, offset = textwrap.dedent("".join(lines)), start - 1
        else:
            return None, {}
        tree = ast.parse(body)
    except (OSError, TypeError, SyntaxError, UnicodeDecodeError):
        return None, {}
    statements = tree.body
    if inspect.isclass(obj) and statements and isinstance(statements[0], ast.ClassDef):
        statements = statements[0].body
    found: dict[str, int] = {}
    for node in statements:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign | ast.AugAssign) else [])
        for target in targets:
            if isinstance(target, ast.Name):
                found.setdefault(target.id, node.lineno + offset)
    return filename, found


def _object_label(obj: Any) -> str:
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    if inspect.isclass(obj):
        return f"class {obj.__qualname__}"
    return f"{type(obj).__name__} object"


def read_object(obj: Any, *, namespace: str | None = None) -> Layer:
    """Celery's ``config_from_object`` reading rules; see :meth:`Conf.load_object`."""
    filename, lines = _assignment_lines(obj)
    where = display_path(filename) if filename else _object_label(obj)
    layer = Layer(label=where)
    prefix = f"{namespace.upper().rstrip('_')}_" if namespace else None
    new, old = [], []
    for name in dir(obj):
        if name.startswith("_"):
            continue
        try:
            value = getattr(obj, name)
        except Exception:  # a lazy settings object may refuse some attributes
            continue
        key, is_old = _classify(name, prefix)
        if key is None:
            continue
        source = f"{where}:{lines[name]}" if name in lines else where
        if key not in Settings.model_fields and not is_old:
            if _is_code(value):  # imports, helper functions, classes: not settings
                continue
            issue = unknown_setting(key, source)
            if issue is not None:
                layer.issues.append(ConfigIssue(name, issue.message, source))
            continue
        (old if is_old else new).append((name, key, value, source))
    if old and new:
        for name, key, _value, source in old:
            layer.issues.append(ConfigIssue(name, (
                "Cannot mix new and old setting keys, please rename the following settings to "
                f"the new format: {name} -> {key}"), source))
        old = []
    for name, key, _value, source in old:
        warnings.warn(f"{source}: {name} is Celery's old name of the setting {key}; "
                      f"please rename it to {key}", DeprecationWarning, stacklevel=4)
    for _name, key, value, source in new + old:
        layer.add(key, value, source)
    return layer


def _classify(name: str, prefix: str | None) -> tuple[str | None, bool]:
    """(setting name or None to ignore, whether it is an old Celery name)."""
    if prefix is not None:
        if not name.startswith(prefix):
            return None, False
        stripped = name[len(prefix):].lower()
        if stripped not in Settings.model_fields and name in OLD_NAMES:
            return OLD_NAMES[name], True
        return stripped, False
    if name in OLD_NAMES:
        return OLD_NAMES[name], True
    if name.isupper():  # constants, as in Celery
        return None, False
    return name, False


def _is_code(value: Any) -> bool:
    return inspect.ismodule(value) or inspect.isclass(value) or inspect.isroutine(value)


# --- YAML / JSON files --------------------------------------------------------------------


def read_file(path: str | os.PathLike) -> Layer:
    """A YAML (or JSON) mapping of settings; each key's source is ``file:line``."""
    where = display_path(path)
    if Path(path).suffix.lower() not in {".yaml", ".yml", ".json"}:
        raise ConfigError(f"{where}: not a settings file; use a .yaml, .yml or .json file "
                          "(a Python module goes to load_object)")
    try:
        parsed = safe_yaml.load(safe_yaml.read_text(path, MAX_SETTINGS_BYTES, where), where)
    except safe_yaml.YAMLError as exc:
        raise ConfigError(str(exc)) from None
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such settings file") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
    data = parsed.data
    layer = Layer(label=where)
    if data is None:
        return layer
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of settings (key: value), "
                          f"got {type(data).__name__}")
    for name, value in data.items():
        line = parsed.positions.get((name,))
        source = f"{where}:{line[0]}" if line else where
        key = OLD_NAMES.get(name, name) if isinstance(name, str) else str(name)
        if key not in Settings.model_fields:
            issue = unknown_setting(str(name), source)
            if issue is not None:
                layer.issues.append(issue)
            continue
        if key != name:
            warnings.warn(f"{source}: {name} is Celery's old name of the setting {key}; "
                          f"please rename it to {key}", DeprecationWarning, stacklevel=4)
        layer.add(key, value, source)
    return layer


# --- environment variables ----------------------------------------------------------------


#: ``RUNNER_*`` variables that are no setting: runner's own, and those CI systems set (GitHub
#: Actions sets RUNNER_OS, RUNNER_TEMP, ... on every job).
NOT_SETTINGS = frozenset({
    ENV_CONFIG, "RUNNER_APP",
    "RUNNER_OS", "RUNNER_ARCH", "RUNNER_NAME", "RUNNER_TEMP", "RUNNER_TOOL_CACHE",
    "RUNNER_WORKSPACE", "RUNNER_DEBUG", "RUNNER_ENVIRONMENT", "RUNNER_PERFLOG",
    "RUNNER_TRACKING_ID",
    "RUNNER_DASHBOARD_AUTH", "RUNNER_DASHBOARD_TOKEN",  # runner dashboard's --auth, --token
})
_WARNED: set[str] = set()  # unknown variables already named in a warning


def unknown_environ(environ: Mapping[str, str]) -> list[ConfigIssue]:
    """A ConfigIssue for each ``RUNNER_*`` variable that is no setting (a typo such as
    ``RUNNER_WORKER_CONCURENCY`` is otherwise ignored without a word), with the one meant."""
    issues = []
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable in NOT_SETTINGS:
            continue
        key = variable[len(ENV_PREFIX):].lower()
        if key in Settings.model_fields:
            continue
        guess = difflib.get_close_matches(key, SETTING_NAMES, n=1, cutoff=0.6)
        hint = (f"did you mean {ENV_PREFIX}{guess[0].upper()}?" if guess else
                f"runner reads {ENV_PREFIX}<SETTING> for its settings")
        issues.append(ConfigIssue(variable, f"not a setting, ignored; {hint}", "environment"))
    return issues


def warn_unknown_environ(environ: Mapping[str, str]) -> None:
    """Log each ``RUNNER_*`` variable that is no setting, once per process (``runner
    validate`` reports them as errors)."""
    for issue in unknown_environ(environ):
        if issue.key not in _WARNED:
            _WARNED.add(issue.key)
            logger.warning("%s", issue)


def read_environ(environ: Mapping[str, str]) -> Layer:
    """``RUNNER_<SETTING>`` variables, parsed to the setting's type.

    Text settings take the value as is; others are parsed as JSON when they can be (numbers,
    true/false, null, lists, objects) and are otherwise handed to the model as text (``yes``,
    ``json,msgpack`` for a list). Other ``RUNNER_*`` names are ignored (see
    :func:`warn_unknown_environ`), as are :data:`NOT_SETTINGS`.
    """
    layer = Layer(label="environment")
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX) or variable == ENV_CONFIG:
            continue
        key = variable[len(ENV_PREFIX):].lower()
        if key in Settings.model_fields:
            layer.add(key, _parse_env(key, environ[variable]), f"env {variable}")
    return layer


def _parse_env(key: str, raw: str) -> Any:
    if Settings.model_fields[key].annotation in (str, str | None):
        return raw
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, or nested past Python's limit: the text
        return raw


def ensure_cwd_on_path() -> None:
    """``celeryconfig`` lives in the working directory; make it importable as Celery does."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def import_path(path: str | os.PathLike) -> types.ModuleType:
    """Execute a ``.py`` file as a module (named after the file) without putting it on sys.path."""
    import importlib.util

    where = display_path(path)
    if not Path(path).is_file():
        raise ConfigError(f"{where}: no such file")
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{where}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise ConfigError(f"config module {where} failed to import: "
                          f"{type(exc).__name__}: {exc}{_where(exc)}") from exc
    return module
