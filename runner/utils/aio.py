"""Running ``async def`` tasks: a coroutine to its end on a thread's own event loop (the
prefork, threads and solo pools, eager calls), and :class:`Interruptible`, which lets a time
limit raise its exception *inside* a coroutine (where ``except SoftTimeLimitExceeded`` in the
task's code can catch it) rather than only cancel it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
from collections.abc import Callable, Coroutine, Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

_loops = threading.local()


def loop_kind(setting: str) -> str:
    """The event loop ``worker_event_loop`` (``setting``) stands for: "uvloop" or "asyncio"
    ("auto": uvloop where it is installed). Raises ConfigError for "uvloop" without it."""
    if setting == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if setting == "uvloop":
            from runner.exceptions import ConfigError

            raise ConfigError("worker_event_loop = uvloop (--loop uvloop): uvloop is not "
                              "installed; pip install 'runner[uvloop]'") from None
        return "asyncio"
    return "uvloop"


def new_event_loop(setting: str) -> asyncio.AbstractEventLoop:
    """A new event loop of the kind ``worker_event_loop`` (``setting``) stands for."""
    if loop_kind(setting) == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class Interruptible:
    """Awaits ``coro``, forwarding what its task sends and throws; after :meth:`interrupt`
    the next cancellation of the task reaches the coroutine as that exception instead (and
    the task's cancel request is withdrawn, so ``asyncio.timeout`` and friends still work)."""

    __slots__ = ("coro", "_pending")

    def __init__(self, coro: Coroutine) -> None:
        self.coro = coro
        self._pending: BaseException | None = None

    def interrupt(self, task: asyncio.Task, exc: BaseException) -> None:
        """Raise ``exc`` in the coroutine at its current ``await`` (from the loop's thread)."""
        if task.done():
            return
        self._pending = exc
        task.cancel()

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, value, error = self.coro, None, None
        while True:
            try:
                yielded = coro.throw(error) if error is not None else coro.send(value)
            except StopIteration as stop:
                return stop.value
            value = error = None
            try:
                value = yield yielded
            except asyncio.CancelledError as cancelled:
                error = cancelled
                if self._pending is not None:
                    error, self._pending = self._pending, None
                    current = asyncio.current_task()
                    if current is not None:
                        current.uncancel()
            except BaseException as exc:  # noqa: BLE001 - forwarded into the coroutine
                error = exc


async def _await(awaitable: Any) -> Any:
    return await awaitable


class _Running:
    """A coroutine :func:`run_coroutine` runs on a thread's loop, and an exception asked to be
    raised in it from another thread (a time limit)."""

    __slots__ = ("loop", "wrapper", "task", "raised", "thrown")

    def __init__(self, loop: asyncio.AbstractEventLoop, wrapper: Interruptible,
                 task: asyncio.Task) -> None:
        self.loop, self.wrapper, self.task = loop, wrapper, task
        self.raised: BaseException | None = None
        self.thrown = False

    def throw(self) -> None:
        """(On the loop.)"""
        if self.raised is not None and not self.task.done():
            self.thrown = True
            self.wrapper.interrupt(self.task, self.raised)


#: thread id -> what it runs, while :func:`run_coroutine` runs a coroutine there
_running: dict[int, _Running] = {}


def interrupt_coroutine(thread_id: int, exc_type: type[BaseException]) -> bool:
    """Raise ``exc_type`` inside the coroutine thread ``thread_id`` runs (with
    :func:`run_coroutine`) at its current ``await``, from that thread's loop; False if it runs
    none. (An exception injected into the thread instead would wait for the loop to wake: a
    coroutine awaiting a 10 s sleep would see its 0.3 s soft limit after 10 s.) A coroutine
    that blocks its loop until it ends gets it as it ends, as a plain function would."""
    running = _running.get(thread_id)
    if running is None:
        return False
    running.raised = exc_type()
    try:
        running.loop.call_soon_threadsafe(running.throw)
    except RuntimeError:  # its loop closed meanwhile: it runs nothing
        return False
    return True


def run_coroutine(coro: Coroutine) -> Any:
    """Run ``coro`` to its end in this thread and return its value (or raise its exception).

    The loop is this thread's own and is kept for its next coroutines (a client a task made
    on it, cached, stays usable). An exception raised into the thread while the loop waits (a
    soft time limit's SIGALRM, or one a thread pool injects) is thrown into the coroutine at
    its ``await``, as it would be in a plain function. Called where a loop already runs (an
    ``apply()`` from async code), the coroutine runs on a thread of its own. A thread pool's
    time limits reach it through :func:`interrupt_coroutine`."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return _in_thread(coro)
    loop = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = _loops.loop = asyncio.new_event_loop()
    wrapper = Interruptible(coro)
    task = loop.create_task(_await(wrapper))
    thread_id = threading.get_ident()
    running = _running[thread_id] = _Running(loop, wrapper, task)
    try:
        try:
            value = loop.run_until_complete(task)
        except BaseException as exc:
            if task.done():
                raise
            wrapper.interrupt(task, exc)  # raised outside the coroutine: into it, then its end
            value = loop.run_until_complete(task)
    finally:
        _running.pop(thread_id, None)
    if running.raised is not None and not running.thrown:  # its loop never got to throw it
        raise running.raised
    return value


def _in_thread(coro: Coroutine) -> Any:
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = run_coroutine(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name="runner-async-task", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


# -- the async client ---------------------------------------------------------------------------

_client: tuple[int, ThreadPoolExecutor] | None = None
_client_lock = threading.Lock()


def _client_executor() -> ThreadPoolExecutor:
    """One thread per process does the async client's broker and backend calls: what it sends
    and what it reads go through the same connections (an ``rpc://`` reply queue is one
    connection's), and the caller's event loop never waits on a socket."""
    global _client
    with _client_lock:
        if _client is None or _client[0] != os.getpid():  # (none yet, or made before a fork)
            _client = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="runner-aio-client"))
        return _client[1]


async def in_client_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``function(*args, **kwargs)`` in the client thread, awaited; it runs in a copy of the
    caller's context (a result sent by a running task is still recorded as its child)."""
    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, function, *args, **kwargs)
    return await loop.run_in_executor(_client_executor(), call)


# -- waiting for results ------------------------------------------------------------------------

#: at most this many ``aget`` calls of a process wait on the result backend at once (each in a
#: thread of its own, with the backend's own wait: a Redis subscription, SQLite's file watch);
#: more take turns, WAIT_SLICE seconds at a time
WAITERS = 32
#: seconds one wait of ``aget`` lasts before it gives its thread to the next one
WAIT_SLICE = 1.0

_waiters: tuple[int, ThreadPoolExecutor] | None = None


async def in_waiting_thread(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` (a backend's blocking wait) in one of WAITERS threads, awaited: the
    caller's loop runs meanwhile, and the client thread stays free for sends."""
    global _waiters
    with _client_lock:
        if _waiters is None or _waiters[0] != os.getpid():
            _waiters = (os.getpid(), ThreadPoolExecutor(WAITERS,
                                                        thread_name_prefix="runner-aio-wait"))
        executor = _waiters[1]
    return await asyncio.get_running_loop().run_in_executor(executor, function, *args)
