"""Signals: Celery's names, senders and keyword arguments (``from runner import signals``).

A :class:`Signal` keeps a list of receivers; ``send`` calls each one whose ``sender`` filter
matches, with ``signal=`` and ``sender=`` and the signal's own keyword arguments. Where each
signal fires, and from which process, is listed in the README ("Signals").

Promises:
- Receivers are called in the order they were connected, in the sending thread.
- A receiver that raises is logged (``runner.signals``, naming the signal and the receiver) and
  does not stop the caller: its exception takes the place of its response in what ``send``
  returns. (Celery's ``send`` does the same since 4.0.)
- Receivers are held by weak reference unless ``weak=False`` (bound methods through
  ``WeakMethod``): a receiver nobody else holds is dropped once garbage collected.
- A receiver that cannot take what the signal sends (no ``**kwargs``, or a required parameter
  the signal never sends) is refused at ``connect`` with :class:`InvalidReceiver`.
- Sending with no receivers costs one attribute test; call sites on the hot path test
  ``if signal.receivers:`` before building the arguments at all.
"""

from __future__ import annotations

import inspect
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

from runner.exceptions import RunnerError

logger = logging.getLogger("runner.signals")

__all__ = [
    "Signal", "InvalidReceiver", "before_task_publish", "after_task_publish", "task_received",
    "task_prerun", "task_postrun", "task_success", "task_failure", "task_retry",
    "task_revoked", "task_rejected", "task_unknown", "worker_init", "worker_ready",
    "worker_process_init", "worker_process_shutdown", "worker_shutdown", "beat_init",
    "setup_logging", "after_setup_logger", "after_setup_task_logger", "import_modules",
]


class InvalidReceiver(RunnerError, TypeError):
    """A receiver whose signature cannot take what its signal sends (a TypeError)."""


def _sender_key(sender: Any) -> Any:
    """What a receiver's ``sender`` filter is compared with: a string (a task name) as such,
    None for any sender, else the object's identity."""
    if sender is None or isinstance(sender, str):
        return sender
    return id(getattr(sender, "__func__", sender))


def _receiver_key(receiver: Callable) -> Any:
    if inspect.ismethod(receiver):
        return (id(receiver.__self__), id(receiver.__func__))
    return id(receiver)


def _describe(receiver: Callable) -> str:
    name = getattr(receiver, "__qualname__", None) or type(receiver).__qualname__
    module = getattr(receiver, "__module__", None)
    return f"{module}.{name}" if module else name


class Signal:
    """One signal: ``connect`` receivers to it, ``send`` to call them (Celery's and Django's
    API)."""

    def __init__(self, name: str | None = None, providing_args: Any = None,
                 use_caching: bool = False):
        self.name = name or "signal"
        #: the keyword arguments ``send`` passes (None: not said; receivers then need only
        #: ``**kwargs``); ``use_caching`` is accepted for Celery's signature and ignored
        self.providing_args = frozenset(providing_args) if providing_args is not None else None
        #: (lookup key, sender key, receiver or its weak reference, is_weak); replaced, never
        #: changed in place, so ``send`` reads it without a lock. Empty: nothing to do.
        self.receivers: list[tuple[Any, Any, Any, bool]] = []
        #: (receivers list, its receivers) while every one takes any sender and is held
        #: strongly (the worker's own, e.g. task events): no filtering per send
        self._plain: tuple[list, list[Callable]] | None = None
        self._lock = threading.Lock()
        self._dead = False

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"

    # -- connecting ---------------------------------------------------------------------------

    def connect(self, receiver: Callable | None = None, sender: Any = None, weak: bool = True,
                dispatch_uid: Any = None) -> Any:
        """Connect ``receiver``; as a decorator, ``@signal.connect`` or
        ``@signal.connect(sender=..., weak=..., dispatch_uid=...)``. Returns the receiver
        (the decorator, without one). ``sender`` limits it to one sender: an object compared
        by identity, or a task name (for task signals, whose sender is the task)."""
        if receiver is None:
            def decorator(fun: Callable) -> Callable:
                return self.connect(fun, sender=sender, weak=weak, dispatch_uid=dispatch_uid)
            return decorator
        if not callable(receiver):
            raise InvalidReceiver(f"{self.name}.connect({receiver!r}): a receiver must be "
                                  f"callable")
        self._check_signature(receiver)
        key = (dispatch_uid if dispatch_uid is not None else _receiver_key(receiver),
               _sender_key(sender))
        ref: Any = receiver
        if weak:
            try:
                ref = (weakref.WeakMethod(receiver, self._on_dead) if inspect.ismethod(receiver)
                       else weakref.ref(receiver, self._on_dead))
            except TypeError:  # (not weak-referenceable: held strongly)
                weak = False
        with self._lock:
            self._clear_dead()
            if not any(entry[0] == key for entry in self.receivers):
                self.receivers = [*self.receivers, (key, key[1], ref, weak)]
        return receiver

    def disconnect(self, receiver: Callable | None = None, sender: Any = None,
                   dispatch_uid: Any = None) -> bool:
        """Disconnect what was connected with the same receiver (or ``dispatch_uid``) and
        ``sender``; True if something was."""
        if dispatch_uid is None and receiver is None:
            raise TypeError(f"{self.name}.disconnect() needs a receiver or a dispatch_uid")
        key = (dispatch_uid if dispatch_uid is not None else _receiver_key(receiver),
               _sender_key(sender))
        with self._lock:
            self._clear_dead()
            kept = [entry for entry in self.receivers if entry[0] != key]
            found = len(kept) != len(self.receivers)
            self.receivers = kept
        return found

    def has_listeners(self, sender: Any = None) -> bool:
        return bool(self._live_receivers(sender))

    def _check_signature(self, receiver: Callable) -> None:
        """Refuse, now, a receiver that every ``send`` would fail to call."""
        try:
            parameters = inspect.signature(receiver).parameters.values()
        except (TypeError, ValueError):  # (a builtin without a signature: cannot tell)
            return
        what = f"receiver {_describe(receiver)} of signal {self.name}"
        sent = sorted({"signal", "sender", *(self.providing_args or ())})
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            raise InvalidReceiver(
                f"{what} must accept keyword arguments: the signal sends {', '.join(sent)} "
                f"(and may send more later); write it as def {getattr(receiver, '__name__', 'f')}"
                f"(sender=None, **kwargs)")
        if self.providing_args is None:  # (what it sends is not said: cannot tell more)
            return
        for p in parameters:
            if p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.kind is p.POSITIONAL_ONLY or p.name not in sent:
                raise InvalidReceiver(
                    f"{what} has a required parameter {p.name!r} the signal never sends "
                    f"(it sends {', '.join(sent)}, all by keyword): give it a default or "
                    f"remove it")

    # -- sending ------------------------------------------------------------------------------

    def send(self, sender: Any, **named: Any) -> list[tuple[Callable, Any]]:
        """Call each receiver of ``sender``; returns ``[(receiver, response), ...]``, where a
        receiver that raised has its exception as response (and is logged)."""
        if not self.receivers:
            return []
        responses = []
        for receiver in self._live_receivers(sender):
            try:
                response = receiver(signal=self, sender=sender, **named)
            except Exception as exc:  # noqa: BLE001 - a receiver never stops the caller
                logger.exception("Signal handler %s of signal %s raised: %r",
                                 _describe(receiver), self.name, exc)
                response = exc
            responses.append((receiver, response))
        return responses

    send_robust = send  # (Celery's send is robust already)

    def _live_receivers(self, sender: Any) -> list[Callable]:
        if self._dead:
            with self._lock:
                self._clear_dead()
        entries = self.receivers
        if not entries:
            return []
        plain = self._plain
        if plain is not None and plain[0] is entries:  # (the list is replaced on change)
            return plain[1]
        if all(wanted is None and not weak for _key, wanted, _ref, weak in entries):
            found = [ref for _key, _wanted, ref, _weak in entries]
            self._plain = (entries, found)
            return found
        sender_key = _sender_key(sender)
        name = None if isinstance(sender, str) else getattr(sender, "name", None)
        found = []
        for _key, wanted, ref, weak in entries:
            if wanted is not None and wanted != sender_key and (
                    name is None or wanted != name):
                continue
            receiver = ref() if weak else ref
            if receiver is not None:
                found.append(receiver)
        return found

    def _on_dead(self, _ref: Any) -> None:
        """A weakly held receiver was collected (may run inside any code: no blocking)."""
        self._dead = True
        if self._lock.acquire(blocking=False):
            try:
                self._clear_dead()
            finally:
                self._lock.release()

    def _clear_dead(self) -> None:
        """(With the lock held.)"""
        if self._dead:
            self._dead = False
            self.receivers = [entry for entry in self.receivers
                              if not entry[3] or entry[2]() is not None]


_LOGGING = ("loglevel", "logfile", "format", "colorize")

# -- sending tasks (in the process that sends; sender: the task name) ---------------------------
before_task_publish = Signal("before_task_publish", (
    "body", "exchange", "routing_key", "headers", "properties", "declare", "retry_policy"))
after_task_publish = Signal("after_task_publish", ("body", "exchange", "routing_key",
                                                   "headers"))

# -- running tasks (where the task runs; sender: the task) --------------------------------------
task_received = Signal("task_received", ("request",))
task_prerun = Signal("task_prerun", ("task_id", "task", "args", "kwargs"))
task_postrun = Signal("task_postrun", ("task_id", "task", "args", "kwargs", "retval", "state"))
task_success = Signal("task_success", ("result",))
task_failure = Signal("task_failure", ("task_id", "exception", "args", "kwargs", "traceback",
                                       "einfo"))
task_retry = Signal("task_retry", ("request", "reason", "einfo"))
task_revoked = Signal("task_revoked", ("request", "terminated", "signum", "expired"))
task_rejected = Signal("task_rejected", ("message", "exc"))
task_unknown = Signal("task_unknown", ("name", "id", "message", "exc"))

# -- the worker and beat ------------------------------------------------------------------------
worker_init = Signal("worker_init", ())
worker_ready = Signal("worker_ready", ())
worker_process_init = Signal("worker_process_init", ())
worker_process_shutdown = Signal("worker_process_shutdown", ("pid", "exitcode"))
worker_shutdown = Signal("worker_shutdown", ())
beat_init = Signal("beat_init", ())
import_modules = Signal("import_modules", ())

# -- logging ------------------------------------------------------------------------------------
setup_logging = Signal("setup_logging", _LOGGING)
after_setup_logger = Signal("after_setup_logger", ("logger", *_LOGGING))
after_setup_task_logger = Signal("after_setup_task_logger", ("logger", *_LOGGING))

#: Celery's signals runner does not send: importing one is an error that says so
_NOT_SUPPORTED = frozenset({
    "task_sent", "task_internal_error", "celeryd_init", "celeryd_after_setup",
    "worker_before_create_process", "worker_process_shutdown_hook", "worker_shutting_down",
    "beat_embedded_init", "heartbeat_sent", "eventlet_pool_started",
    "eventlet_pool_preshutdown", "eventlet_pool_postshutdown", "eventlet_pool_apply",
    "user_preload_options",
})


def __getattr__(name: str) -> Any:
    if name in _NOT_SUPPORTED:
        raise AttributeError(
            f"runner.signals has no {name!r}: runner does not send Celery's {name} signal "
            f"(see the README, 'Signals', for those it sends)")
    raise AttributeError(f"module 'runner.signals' has no attribute {name!r}")
