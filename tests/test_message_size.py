"""``task_message_max_size``: a call whose arguments are too large is refused by ``delay()``
with an error naming the task, the size and the limit, and nothing is sent."""

from __future__ import annotations

import pytest

from runner import chain, group
from runner.exceptions import MessageTooLarge, SerializationError


def test_a_call_over_the_limit_is_refused_and_nothing_is_sent(app, start_worker):
    from tasks import echo

    start_worker("-c", "1")
    app.conf.task_message_max_size = 10_000
    with pytest.raises(MessageTooLarge) as caught:
        echo.delay("x" * 20_000)
    text = str(caught.value)
    assert "'tasks.echo'" in text and "20,0" in text and "10,000" in text
    assert "task_message_max_size" in text
    assert isinstance(caught.value, SerializationError)  # caught as Celery users catch it
    with pytest.raises(MessageTooLarge):  # a workflow is refused whole: none of it is sent
        group(echo.s("small"), echo.s("y" * 20_000)).delay()
    with pytest.raises(MessageTooLarge):
        app.send_task("tasks.echo", args=["z" * 20_000])
    assert app.broker.qsize("celery") == 0
    assert echo.delay("x" * 5_000).get(timeout=15) == "x" * 5_000  # under it: runs as before
    assert chain(echo.s("a"), echo.si("b")).delay().get(timeout=15) == "b"


def test_the_limit_is_16_mib_by_default_and_none_lifts_it(app):
    from tasks import echo

    assert app.conf.task_message_max_size == 16 * 2**20
    with pytest.raises(MessageTooLarge, match="over task_message_max_size"):
        echo.delay("x" * (16 * 2**20))
    assert app.broker.qsize("celery") == 0
    app.conf.task_message_max_size = None
    echo.delay("x" * (16 * 2**20))
    assert app.broker.qsize("celery") == 1
