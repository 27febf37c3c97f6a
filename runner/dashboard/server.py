"""The dashboard's web application (Starlette) and its server (uvicorn, one process): the
event receiver and the poller run in threads beside it; handlers that read the broker or the
backend run in uvicorn's thread pool, so a slow answer never blocks the other pages.

``Dashboard(app, options)`` is the whole thing: :meth:`serve` runs it until interrupted,
:meth:`start_in_thread` (tests, the bench) runs it beside the caller.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from runner.dashboard import api, pages
from runner.dashboard.auth import AuthMiddleware, Security
from runner.dashboard.context import Context, Options
from runner.dashboard.errors import HTTPProblem
from runner.dashboard.http import on_error, on_problem
from runner.dashboard.metrics import Metrics, cluster_gauges
from runner.dashboard.poller import Poller
from runner.dashboard.store import EventStore
from runner.exceptions import ConfigError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_options(options: Options) -> None:
    """ConfigError for options the dashboard refuses (another address without auth)."""
    if not is_loopback(options.host) and not (options.auth or options.token):
        raise ConfigError(f"--host {options.host}: the dashboard listens on another address "
                          f"than 127.0.0.1 only with authentication (--auth USER:PASSWORD "
                          f"or --token TOKEN)")
    if options.auth is not None and ":" not in options.auth:
        raise ConfigError("--auth must be USER:PASSWORD")
    if options.max_tasks < 1:
        raise ConfigError("--max-tasks must be at least 1")


class Dashboard:
    def __init__(self, app: Any, options: Options | None = None):
        self.options = options or Options()
        check_options(self.options)
        self.metrics = Metrics()
        store = EventStore(app, max_tasks=self.options.max_tasks,
                           observers=[self.metrics.observe])
        poller = Poller(app, interval=self.options.poll_interval)
        self.ctx = Context(app, self.options, store, poller, {"metrics": self.metrics})
        self.metrics.add_scraped(lambda: cluster_gauges(self.ctx))
        self.security = Security(self.options.auth, self.options.token)
        self.web = self._web()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def _web(self) -> Starlette:
        from importlib.resources import files

        static = StaticFiles(directory=str(files("runner.dashboard") / "static"))
        middleware = [Middleware(AuthMiddleware, security=self.security)]
        if is_loopback(self.options.host):  # a page of a name rebound to 127.0.0.1 is not
            middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=[
                "127.0.0.1", "localhost", "::1", "[::1]", self.options.host]))
        web = Starlette(
            routes=[*pages.ROUTES, *api.ROUTES, Mount("/static", static, name="static")],
            middleware=middleware,
            exception_handlers={HTTPProblem: on_problem, Exception: on_error})
        web.state.ctx = self.ctx
        web.state.security = self.security
        web.state.pages = pages.Pages()
        return web

    # -- running ----------------------------------------------------------------------------

    def start_background(self) -> None:
        self.ctx.store.start()
        self.ctx.poller.start()

    def stop_background(self) -> None:
        self.ctx.store.stop()
        self.ctx.poller.stop()

    def _uvicorn(self, sock: socket.socket | None = None) -> Any:
        import uvicorn

        config = uvicorn.Config(self.web, host=self.options.host, port=self.options.port,
                                log_level="warning", access_log=False, lifespan="off")
        return uvicorn.Server(config)

    def serve(self) -> None:
        """Run until Ctrl-C (uvicorn handles SIGINT/SIGTERM)."""
        self.start_background()
        try:
            self._uvicorn().run()
        finally:
            self.stop_background()

    def start_in_thread(self, timeout: float = 15.0) -> str:
        """Start serving in a thread; returns the base URL once it accepts connections."""
        self.start_background()
        self._server = self._uvicorn()
        self._server.install_signal_handlers = lambda: None  # (not the main thread)
        self._thread = threading.Thread(target=self._server.run, name="dashboard-http",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the dashboard did not start")
            time.sleep(0.02)
        return f"http://{self.options.host}:{self.options.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self.stop_background()
