"""The one error the dashboard's handlers raise: a status and a message for the user. Every
other exception is a bug, answered with a plain 500 that shows no traceback."""

from __future__ import annotations


class HTTPProblem(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def not_found(what: str) -> HTTPProblem:
    return HTTPProblem(404, what)


def bad_request(message: str) -> HTTPProblem:
    return HTTPProblem(400, message)
