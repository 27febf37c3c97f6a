"""The worker's listening thread: control commands in, replies out.

It runs in the worker's main process beside the main loop, never behind the pool, so a worker
whose every slot runs a long task still answers within one poll of the channel (well under a
second). Read-only commands (inspect) are answered here; commands that change the worker run
in its main loop (see :attr:`runner.control.commands.Spec.in_loop`), handed over through
``call_in_loop``. A malformed message is logged and dropped; a failing command is an error
reply: nothing a caller sends can stop the worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from runner.control.client import fanout_of
from runner.control.commands import COMMANDS, dispatch
from runner.control.wire import PIDBOX, Command, MalformedCommand, Reply

if TYPE_CHECKING:  # pragma: no cover
    from runner.app import Runner

logger = logging.getLogger("runner.control")

POLL = 0.25  # seconds: longest wait on the channel (how soon a stop is noticed)
IN_LOOP_WAIT = 0.8  # seconds a command waits for the main loop before replying "queued"
ERROR_PAUSE = 1.0


class ControlLoop(threading.Thread):
    def __init__(self, app: Runner, node: str, panel: Any,
                 call_in_loop: Callable[[Callable[[], Any]], Future]):
        super().__init__(name="runner-control", daemon=True)
        self.app, self.node, self.panel = app, node, panel
        self.call_in_loop = call_in_loop
        self.listening = threading.Event()  # subscribed: commands sent from now on arrive
        self._stopped = threading.Event()
        self._local = threading.local()
        self.fanout = None

    def stop(self) -> None:
        self._stopped.set()
        self.join(POLL + 2)

    def run(self) -> None:
        subscription = None
        while not self._stopped.is_set():
            try:
                if subscription is None:
                    self.fanout = fanout_of(self.app, self._local)
                    subscription = self.fanout.subscribe(PIDBOX, ttl=10.0, expires=60.0)
                    self.listening.set()
                for body in subscription.get(POLL):
                    self.handle(body)
            except Exception as exc:  # noqa: BLE001 - the channel failed: listen again
                logger.warning("control: listening for commands failed (%s: %s); trying "
                               "again", type(exc).__name__, exc)
                if subscription is not None:
                    subscription.close()
                subscription = None
                self.listening.set()  # (the worker does not wait for a broken channel)
                self._stopped.wait(ERROR_PAUSE)
        if subscription is not None:
            subscription.close()

    def handle(self, body: bytes) -> None:
        try:
            command = Command.decode(body)
        except MalformedCommand as exc:
            logger.warning("control: dropped a malformed control message (%s): %r", exc,
                           body[:200])
            return
        if not command.for_node(self.node):
            return
        logger.debug("control: %s %r", command.method, command.arguments)
        reply = self.answer(command)
        if command.reply_to:
            try:
                self.fanout.reply(command.reply_to, Reply(command.ticket, self.node,
                                                          reply).encode())
            except Exception as exc:  # noqa: BLE001 - the caller gave up, or the channel failed
                logger.warning("control: replying to %s failed: %s", command.method, exc)

    def answer(self, command: Command) -> Any:
        spec = COMMANDS.get(command.method)
        try:
            if spec is None or not spec.in_loop:
                return dispatch(self.panel, command.method, command.arguments)
            future = self.call_in_loop(
                lambda: dispatch(self.panel, command.method, command.arguments))
            try:
                return future.result(IN_LOOP_WAIT)
            except FutureTimeout:
                return {"ok": f"{command.method} queued: the worker's loop is busy (a task "
                              f"runs in it), it is done after that"}
        except Exception as exc:  # noqa: BLE001 - a bug must cost one reply, not the worker
            logger.exception("control: command %s failed", command.method)
            return {"error": f"{command.method} failed: {type(exc).__name__}: {exc}"}


def wait_listening(loop: ControlLoop, timeout: float = 10.0) -> None:
    """Until ``loop`` listens (so a command sent once the worker says ready reaches it)."""
    deadline = time.monotonic() + timeout
    while not loop.listening.wait(0.05) and time.monotonic() < deadline:
        if not loop.is_alive():
            return
