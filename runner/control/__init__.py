"""Celery's remote control: ``app.control`` (the caller's side, :mod:`runner.control.client`),
the commands a worker answers (:mod:`runner.control.commands`) and the worker's listening
thread (:mod:`runner.control.loop`), over each transport's fan-out
(:mod:`runner.brokers.fanout`). Every transport: SQLite, Redis, RabbitMQ, memory."""

from runner.control.client import Control, Inspect

__all__ = ["Control", "Inspect"]
