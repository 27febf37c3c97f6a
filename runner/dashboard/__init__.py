"""``runner dashboard``: a web UI (workers, tasks, queues, pipeline runs, triggers) with a
JSON API, its OpenAPI spec and Prometheus metrics, fed by the events and the remote control
channel. Above the core: nothing outside :mod:`runner.cli` imports it.

Modules: :mod:`~runner.dashboard.server` (the app and uvicorn), :mod:`~.store` (events into
a bounded picture), :mod:`~.poller` (queue lengths and pools, in the background),
:mod:`~.views` / :mod:`~.runs` (what pages and API show), :mod:`~.actions` (the buttons),
:mod:`~.api`, :mod:`~.pages`, :mod:`~.auth`, :mod:`~.metrics`, :mod:`~.dag` (SVG),
:mod:`~.openapi`.
"""
