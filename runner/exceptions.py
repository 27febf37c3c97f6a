"""Every error runner raises on purpose derives from :class:`RunnerError`.

User-facing errors say what went wrong, where (file:line, key, task name) and what to do; the CLI
prints ``str(error)`` as one line and exits non-zero, so messages are written for people.
Names that Celery users catch (``TimeoutError``, ``SoftTimeLimitExceeded``, ``Retry``, ...) keep
Celery's names.
"""

from __future__ import annotations

from dataclasses import dataclass


class RunnerError(Exception):
    """Base of every error runner raises on purpose."""


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a configuration: which key, where it came from, what is wrong."""

    key: str
    message: str
    source: str | None = None  # "celeryconfig.py:12", "runner.yaml:3:1", "env RUNNER_X", ...

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.key}: {self.message}"


class ConfigError(RunnerError):
    """The configuration is invalid; carries every issue found, not only the first."""

    def __init__(self, issues: list[ConfigIssue] | str, source: str | None = None):
        if isinstance(issues, str):
            issues = [ConfigIssue(key="", message=issues, source=source)]
        self.issues: list[ConfigIssue] = list(issues)
        super().__init__(self._render())

    def _render(self) -> str:
        if len(self.issues) == 1:
            issue = self.issues[0]
            return str(issue) if issue.key else (
                f"{issue.source}: {issue.message}" if issue.source else issue.message)
        lines = [f"{len(self.issues)} configuration errors:"]
        lines += [f"  - {issue}" for issue in self.issues]
        return "\n".join(lines)


class ImproperlyConfigured(ConfigError):
    """Celery's name for a configuration that cannot work (kept for users who catch it)."""


class NotSupportedYet(ConfigError):
    """A valid URL scheme or option that this version of runner does not implement yet."""


class NotSupported(RunnerError, AttributeError):
    """A Celery API runner does not have (yet): the message names it and points to the
    README's table ("Coming from Celery"). An AttributeError too, so ``hasattr`` probes
    still answer False."""


class AppImportError(RunnerError):
    """``-A module`` (or ``module:app``) could not be imported or holds no app."""


# --- transport -----------------------------------------------------------------------------


class BrokerError(RunnerError):
    """The broker failed or cannot be reached (the URL in the message is masked)."""


class BackendError(RunnerError):
    """The result backend failed or cannot be reached."""


# --- serialization ---------------------------------------------------------------------------


class SerializationError(RunnerError):
    """A value could not be encoded or decoded with the chosen serializer."""


class MessageTooLarge(SerializationError):
    """A task's arguments serialize to more than ``task_message_max_size`` bytes: nothing was
    sent (brokers refuse or choke on such messages; pass a reference, e.g. a file path)."""


class ContentDisallowed(SerializationError):
    """A message or result in a content type that is not in the accept list."""


class SecurityError(ContentDisallowed):
    """A message or result whose signature cannot be trusted (unsigned where signing is
    required, a forged or tampered signature, a signer not in the store or expired): never
    run, never stored (Celery's name)."""


# --- tasks -----------------------------------------------------------------------------------


class NotRegistered(RunnerError, KeyError):
    """No task of this name is registered with the app."""

    def __str__(self) -> str:  # KeyError would repr() the argument
        return str(self.args[0]) if self.args else "task not registered"


class TimeoutError(RunnerError, TimeoutError):  # noqa: A001 - Celery's name, also a builtin one
    """``AsyncResult.get(timeout=...)`` ran out of time; catchable as the builtin too."""


class Retry(RunnerError):
    """Raised by ``Task.retry()`` to tell the worker to run the task again later."""

    def __init__(self, message: str | None = None, exc: BaseException | None = None,
                 when: float | None = None, *, countdown: float | None = None,
                 eta: float | None = None, retry_args: list | None = None,
                 retry_kwargs: dict | None = None, options: dict | None = None):
        self.exc = exc
        self.when = when
        self.countdown = countdown
        self.eta = eta  # epoch seconds
        self.retry_args = retry_args
        self.retry_kwargs = retry_kwargs
        self.options = options or {}
        super().__init__(message or (f"Retry in {when}s: {exc!r}" if when is not None
                                     else f"Retry: {exc!r}"))

    def __reduce__(self):
        return (_rebuild_retry, (str(self), self.exc, self.when, self.countdown, self.eta,
                                 self.retry_args, self.retry_kwargs, self.options))


def _rebuild_retry(message, exc, when, countdown, eta, retry_args, retry_kwargs, options):
    return Retry(message, exc, when, countdown=countdown, eta=eta, retry_args=retry_args,
                 retry_kwargs=retry_kwargs, options=options)


class MaxRetriesExceededError(RunnerError):
    """The task asked to be retried more often than ``max_retries`` allows."""


class Reject(RunnerError):
    """Raised by a task to reject its message (``requeue=True`` puts it back)."""

    def __init__(self, reason: str | None = None, requeue: bool = False):
        self.reason = reason
        self.requeue = requeue
        super().__init__(reason or "rejected")


class Ignore(RunnerError):
    """Raised by a task to tell the worker not to record a result for it."""


class TaskRevokedError(RunnerError):
    """The task was revoked before or while it ran."""


class SoftTimeLimitExceeded(RunnerError):
    """Raised inside a task when its soft time limit passes; it may clean up and return."""


class TimeLimitExceeded(RunnerError):
    """The task passed its hard time limit and the process running it was replaced."""


class WorkerLostError(RunnerError):
    """The process running the task died (signal, ``os._exit``, OOM killer)."""


class DeliveryLimitExceeded(RunnerError):
    """The message was delivered more than ``task_delivery_limit`` times without finishing
    (its task keeps killing or stalling the process that runs it): it is a dead letter now."""


class PipelineError(RunnerError):
    """A pipeline file is invalid or a run cannot proceed; carries every problem found, each
    starting with ``file:line:col`` where it has one."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            text = self.problems[0]
        else:
            text = "\n".join([f"{len(self.problems)} problems:"] +
                              [f"  - {p}" for p in self.problems])
        super().__init__(text)
