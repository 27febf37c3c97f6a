"""``app.conf``: the live, validated settings, merged from layers.

Layers, lowest to highest precedence (a higher layer wins for every key it sets):

1. built-in defaults (:class:`~runner.config.settings.Settings`);
2. "file" layers, in call order (a later one wins): objects and modules given to
   :meth:`Conf.load_object` (``app.config_from_object``) and files given to
   :meth:`Conf.load_file` (``app.config_from_file``); then the YAML file named by the
   ``RUNNER_CONFIG`` environment variable, if any;
3. constructor arguments: ``Conf(preconf={...})``, i.e. ``Celery('tasks', broker=..., backend=...)``
   (``None`` counts as "not given" for ``broker``, ``backend`` and settings that cannot be None;
   for the others it is the value: ``Celery(result_expires=None)`` keeps results forever);
4. "cli" layers: ``load_file(path, layer='cli')``, the ``--config`` option of the CLI, and
   :meth:`Conf.load_mapping` (``-b``, ``--result-backend``);
5. environment variables ``RUNNER_<SETTING>`` (``RUNNER_BROKER_URL``, ``RUNNER_WORKER_CONCURRENCY=4``;
   JSON for lists and dicts);
6. runtime changes: ``conf.update(...)``, ``conf.x = ...``, ``conf['x'] = ...``.

Loading never raises for a bad setting: the first read (or :attr:`Conf.settings`) validates the
merged result and raises one :class:`ConfigError` holding every problem of every layer, each with
its source (``celeryconfig.py:12``, ``runner.yaml:3``, ``env RUNNER_BROKER_URL``). Runtime changes
are checked at once. A module *name* given to ``load_object`` is imported when a setting is first
read, as in Celery, unless ``force=True``.

Reads are fast: after validation each setting is stored on the instance, so ``conf.x`` is a
plain attribute lookup until the next change.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from runner.config.loaders import (
    ENV_CONFIG,
    OLD_NAMES,
    Layer,
    did_you_mean,
    import_object,
    read_environ,
    read_file,
    read_object,
    unknown_setting,
    warn_unknown_environ,
)
from runner.config.settings import SETTING_NAMES, URL_SETTINGS, Settings
from runner.config.urls import mask_url
from runner.exceptions import ConfigError, ConfigIssue

_PRECONF_ARGUMENT = {"broker_url": "broker", "result_backend": "backend"}


@dataclass
class _Pending:
    """A module name given to ``load_object`` and not imported yet."""

    name: str
    namespace: str | None
    silent: bool


class Conf:
    """The settings of one app; see the module docstring for layers and precedence."""

    def __init__(self, preconf: Mapping[str, Any] | None = None,
                 environ: Mapping[str, str] | None = None):
        environ = os.environ if environ is None else environ
        init = self.__dict__
        init["_files"] = []  # list[Layer | _Pending], in call order
        init["_cli"] = []  # list[Layer]
        init["_preconf"] = self._read_preconf(preconf or {})
        init["_env"] = read_environ(environ)
        warn_unknown_environ(environ)
        init["_env_file_path"] = environ.get(ENV_CONFIG) or None
        init["_env_file"] = None  # Layer, read when first needed
        init["_runtime"] = Layer(label="runtime")
        init["_settings"] = None

    @staticmethod
    def _read_preconf(preconf: Mapping[str, Any]) -> Layer:
        layer = Layer(label="constructor")
        for key, value in preconf.items():
            if value is None and (key in _PRECONF_ARGUMENT or not _may_be_none(key)):
                continue
            source = f"Celery({_PRECONF_ARGUMENT.get(key, key)}=...)"
            if key in Settings.model_fields:
                layer.add(key, value, source)
            elif (issue := unknown_setting(key, source)) is not None:
                layer.issues.append(issue)
        return layer

    # --- loading ------------------------------------------------------------------------------

    def load_object(self, obj: Any, *, namespace: str | None = None, silent: bool = False,
                    force: bool = False) -> None:
        """Add settings from a module (or its name), a class or any object with attributes.

        Celery's ``config_from_object`` rules: public lowercase names are settings; Celery's
        old UPPERCASE names are mapped with a DeprecationWarning (mixing old and new in one
        source is an error); other UPPERCASE names are constants and ignored, as are imported
        modules, classes and functions. With ``namespace='CELERY'`` only ``CELERY_*`` names
        count (``CELERY_BROKER_URL`` -> ``broker_url``). A string is imported when a setting
        is first read, or now with ``force=True``; ``silent=True`` ignores an ImportError.
        """
        if isinstance(obj, str):
            pending = _Pending(obj, namespace, silent)
            self._files.append(self._resolve(pending) if force else pending)
        else:
            self._files.append(read_object(obj, namespace=namespace))
        self._invalidate()

    def load_file(self, path: str | os.PathLike, *, layer: str = "file") -> None:
        """Add settings from a YAML or JSON file; ``layer`` is ``'file'`` or ``'cli'``."""
        if layer not in ("file", "cli"):
            raise ValueError(f"layer must be 'file' or 'cli', not {layer!r}")
        (self._files if layer == "file" else self._cli).append(read_file(path))
        self._invalidate()

    def load_mapping(self, values: Mapping[str, Any], source: str) -> None:
        """Add settings given as options (``runner -b URL``) to the "cli" layer: above the
        app's own configuration, below ``RUNNER_*`` variables; checked at the first read."""
        layer = Layer(label=source)
        for key, value in values.items():
            layer.add(key, value, source)
        self._cli.append(layer)
        self._invalidate()

    @staticmethod
    def _resolve(pending: _Pending) -> Layer:
        try:
            obj = import_object(pending.name)
        except ImportError as exc:
            if pending.silent:
                return Layer(label=pending.name)
            raise ConfigError(f"cannot import config module {pending.name!r}: {exc} (is its "
                              "directory on sys.path? run from the directory that holds it)"
                              ) from exc
        return read_object(obj, namespace=pending.namespace)

    def _layers(self) -> list[Layer]:
        files = self._files
        for index, item in enumerate(files):
            if isinstance(item, _Pending):
                files[index] = self._resolve(item)
        if self._env_file_path and self._env_file is None:
            try:
                self.__dict__["_env_file"] = read_file(self._env_file_path)
            except ConfigError as exc:
                raise ConfigError([ConfigIssue(ENV_CONFIG, str(exc), f"env {ENV_CONFIG}")]) \
                    from None
        env_file = [self._env_file] if self._env_file else []
        return [*files, *env_file, self._preconf, *self._cli, self._env, self._runtime]

    # --- validation ---------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The merged, validated settings (cached until the next change)."""
        settings = self._settings
        if settings is None:
            settings = self._finalize()
        return settings

    def _finalize(self) -> Settings:
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        issues: list[ConfigIssue] = []
        for layer in self._layers():
            values.update(layer.values)
            sources.update(layer.sources)
            issues.extend(layer.issues)
        try:
            settings = Settings.model_validate(values)
        except ValidationError as exc:
            issues.extend(issues_from(exc, sources))
            settings = None
        if issues:
            raise ConfigError(issues)
        self.__dict__["_settings"] = settings
        self.__dict__.update({name: getattr(settings, name) for name in SETTING_NAMES})
        return settings

    def _invalidate(self) -> None:
        state = self.__dict__
        if state["_settings"] is not None:
            state["_settings"] = None
            for name in SETTING_NAMES:
                state.pop(name, None)

    # --- runtime changes ----------------------------------------------------------------------

    def update(self, mapping: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        """Set several settings at once; every bad key or value is reported together."""
        self._set_many({**(mapping or {}), **kwargs}, "conf.update")

    def _set_many(self, changes: Mapping[str, Any], source: str) -> None:
        issues, accepted = [], {}
        for key, value in changes.items():
            name = OLD_NAMES.get(key, key)
            if name in Settings.model_fields:
                accepted[name] = value
            elif (issue := unknown_setting(key, source)) is not None:
                issues.append(issue)
        try:
            Settings.model_validate(accepted)
        except ValidationError as exc:
            issues.extend(issues_from(exc, dict.fromkeys(accepted, source)))
        if issues:
            raise ConfigError(issues)
        for name, value in accepted.items():
            self._runtime.add(name, value, source)
        self._invalidate()

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            raise AttributeError(f"cannot set private attribute {name!r} of Conf")
        self._set_many({name: value}, f"conf.{name}")

    def __setitem__(self, key: str, value: Any) -> None:
        self._set_many({key: value}, f"conf[{key!r}]")

    # --- reading ------------------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:  # only called when the value is not cached
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in Settings.model_fields:
            raise AttributeError(f"Conf has no setting {name!r}: {did_you_mean(name)}")
        return getattr(self.settings, name)

    def __getitem__(self, key: str) -> Any:
        if key not in Settings.model_fields:
            raise KeyError(f"{key}: {did_you_mean(key)}")
        return getattr(self.settings, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self.settings, key) if key in Settings.model_fields else default

    def __contains__(self, key: object) -> bool:
        return key in Settings.model_fields

    def __iter__(self) -> Iterator[str]:
        return iter(SETTING_NAMES)

    def __len__(self) -> int:
        return len(SETTING_NAMES)

    def keys(self) -> list[str]:
        return list(SETTING_NAMES)

    def items(self) -> list[tuple[str, Any]]:
        settings = self.settings
        return [(name, getattr(settings, name)) for name in SETTING_NAMES]

    def as_dict(self) -> dict[str, Any]:
        """Every effective setting (defaults included), as Python values."""
        return dict(self.items())

    def source_of(self, key: str) -> str | None:
        """Where the effective value of ``key`` came from; None for a built-in default."""
        source = None
        for layer in self._layers():
            source = layer.sources.get(key, source)
        return source

    def __repr__(self) -> str:
        try:
            settings = self.settings
        except ConfigError as exc:
            return f"<Conf: invalid, {len(exc.issues)} problem(s)>"
        urls = " ".join(f"{name}={mask_url(getattr(settings, name))!r}" for name in URL_SETTINGS)
        return f"<Conf: {urls}>"

    __str__ = __repr__


def issues_from(error: ValidationError, sources: Mapping[str, str]) -> list[ConfigIssue]:
    """One readable :class:`ConfigIssue` per pydantic error: key path, problem, what was given."""
    issues = []
    for detail in error.errors(include_url=False):
        loc = detail["loc"]
        key = ".".join(str(part) for part in loc)
        top = str(loc[0]) if loc else ""
        message = detail["msg"].removeprefix("Value error, ")
        if detail["type"] == "extra_forbidden":
            message = "unknown key"
        elif detail["type"] == "missing":
            message = "required key missing"
        elif detail["type"] != "value_error":
            given = detail.get("input")
            shown = mask_url(given) if top in URL_SETTINGS else given
            message += f"; given {_short(shown)}"
        if len(message) > 300:  # a value quoted in the message can be megabytes long
            message = message[:200] + " ... " + message[-60:]
        issues.append(ConfigIssue(key, message, sources.get(top)))
    return issues


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _may_be_none(key: str) -> bool:
    """Whether setting ``key`` accepts None (False for names that are no setting)."""
    field = Settings.model_fields.get(key)
    return field is not None and not field.is_required() and _allows_none(field.annotation)


def _allows_none(annotation: Any) -> bool:
    return annotation is None or type(None) in typing.get_args(annotation)
