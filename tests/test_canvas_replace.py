"""``self.replace(sig)`` inside a task, on real workers: the replacement's final result is the
task's, and the task's chain, chord membership, links and errbacks move to it."""

from __future__ import annotations

import pytest
from canvas_tasks import note_error, replaced_by, xsum
from tasks import add, echo

from runner import chain, chord, group
from tests import canvas_fixtures

db_url, worker = canvas_fixtures.db_url, canvas_fixtures.worker  # fixtures

pytestmark = pytest.mark.transports("sqlite", "redis", "amqp")

TIMEOUT = 20



def test_replace_with_a_task_chain_group_or_chord(app, worker):
    assert replaced_by.delay("task", 1).get(timeout=TIMEOUT) == 2
    assert replaced_by.delay("chain", 1).get(timeout=TIMEOUT) == 20
    assert replaced_by.delay("group", 1).get(timeout=TIMEOUT) == [1, 2, 3]
    assert replaced_by.delay("chord", 1).get(timeout=TIMEOUT) == 6
    result = replaced_by.delay("task", 5)
    assert result.get(timeout=TIMEOUT) == 6 and result.state == "SUCCESS"
    assert result.name == add.name  # the replacement's result, under the task's id


def test_replaced_task_keeps_its_place_in_chains_and_chords(app, worker, tmp_path,
                                                           wait_for_lines):
    assert (replaced_by.si("chain", 1) | add.s(1))().get(timeout=TIMEOUT) == 21
    assert (replaced_by.si("group", 1) | xsum.s())().get(timeout=TIMEOUT) == 6
    assert chord([replaced_by.si("chord", 1), replaced_by.si("task", 1), add.s(1, 1)],
                 xsum.s())().get(timeout=TIMEOUT) == 10
    assert group(replaced_by.si("chain", 2), echo.s(3))().get(timeout=TIMEOUT) == [30, 3]
    # links and errbacks move to the replacement
    marker = tmp_path / "linked.log"
    sig = replaced_by.si("task", 1)
    sig.link(echo.s())
    sig.link_error(note_error.s(str(marker)))
    assert sig.delay().get(timeout=TIMEOUT) == 2
    failing = replaced_by.si("boom", 0)
    failing.link_error(note_error.s(str(marker)))
    result = failing.delay()
    with pytest.raises(ValueError, match="replacement broke"):
        result.get(timeout=TIMEOUT)
    assert wait_for_lines(marker, 1) == [f"{result.id}|ValueError|True"]


def test_replace_eagerly_returns_the_replacements_value(app):
    app.conf.update(task_always_eager=True)
    assert replaced_by.delay("chain", 1).get() == 20
    assert replaced_by.delay("chord", 1).get() == 6
    assert chain(replaced_by.si("task", 1), add.s(1)).apply().get() == 3
