"""The claims board between a prefork worker's main process and its children, in process:
posting and reading claims, snapshots consistent while a child writes (a real second
process), and what the main process makes of the batch of a child that died."""

from __future__ import annotations

import multiprocessing

import pytest

from runner.worker.board import Board, Claimed, settle_dead
from runner.worker.pool import Lost, Returned, Settled, TimedOut
from runner.worker.prefork import PreforkPool, _Child

FORK = multiprocessing.get_context("fork")


def claim(number: int, count: int = 2) -> Claimed:
    return Claimed(number, [(f"tag{i}", "celery", False, b"{}") for i in range(count)])


def test_claims_posted_are_read_once_per_batch():
    board = Board(FORK)
    assert board.read_claims(0) is None
    assert board.post_claims(claim(1))
    assert board.claimed_after(0) and not board.claimed_after(1)
    read = board.read_claims(0)
    assert read is not None and read.number == 1 and read.claims[0][0] == "tag0"
    assert board.read_claims(1) is None  # (already known: batch 1)
    assert board.post_claims(claim(2, 3))
    assert len(board.read_claims(1).claims) == 3


def test_claims_carry_the_childs_cumulative_counts():
    board = Board(FORK)
    assert board.post_claims(Claimed(1, [("t", "celery", False, b"{}")], {"tasks.add": 1}))
    assert board.post_claims(Claimed(2, [("u", "celery", False, b"{}")], {"tasks.add": 2}))
    assert board.read_claims(0).totals == {"tasks.add": 2}  # (batch 1 was never read)


def test_claims_too_large_for_the_board_go_by_pipe():
    board = Board(FORK, claims_size=64)
    assert not board.post_claims(Claimed(1, [("t", "celery", False, b"x" * 100)]))
    assert board.read_claims(0) is None
    assert not Board(FORK, claims_size=0).post_claims(claim(1))  # a fed child posts none


def test_a_batch_ends_with_its_settled_count():
    board = Board(FORK)
    board.begin_batch(7)
    board.job_started(0, deadline_ms=123)
    assert board.snapshot().deadline_ms == 123
    board.job_ended()
    board.jobs_settled(1)
    assert board.ended(7) is None
    board.end_batch(7, 2)
    view = board.snapshot()
    assert (view.batch, view.settled, view.deadline_ms) == (7, 2, 0)
    assert board.ended(7) == 2 and board.ended(6) is None


def _write_forever(board: Board, rounds: int) -> None:
    for i in range(1, rounds):
        board._write(started=i, settled=i, deadline_ms=i)


def test_snapshots_are_consistent_while_a_child_writes():
    """A second process writes three counters together, as fast as it can: every snapshot
    the main process takes shows the three equal (one write, never half of two)."""
    board = Board(FORK)
    writer = FORK.Process(target=_write_forever, args=(board, 300_000))
    writer.start()
    seen = torn = 0
    try:
        while writer.is_alive() or seen == 0:
            view = board.snapshot()
            if view is None:
                continue
            seen += 1
            if not view.started == view.settled == view.deadline_ms:
                torn += 1
    finally:
        writer.join(10)
    assert seen > 0 and torn == 0


def test_the_stop_flag_is_the_main_process_s():
    board = Board(FORK)
    assert not board.stop_asked()
    board.ask_stop()
    assert board.stop_asked()
    board.reset_for_batch()  # (before a batch is sent to a fed child)
    assert not board.stop_asked()


@pytest.mark.parametrize("settled, started, expect", [
    (4, 3, ([10, 11, 12, 13], [], None, [])),  # all settled: nothing lost
    (1, 2, ([10], [11], 12, [13])),  # 11 ran, not written; 12 died with it; 13 never began
    (2, 2, ([10, 11], [], 12, [13])),
    (0, 0, ([], [], 10, [11, 12, 13])),
])
def test_the_batch_of_a_child_that_died_is_accounted_job_by_job(settled, started, expect):
    board = Board(FORK)
    board.begin_batch(1)
    board._write(started=started, settled=settled)
    dead = settle_dead([10, 11, 12, 13], board.snapshot())
    assert (dead.settled, dead.ran, dead.died_in, dead.unstarted) == expect


def test_the_pool_turns_a_dead_child_s_board_into_events():
    board = Board(FORK)
    child = _Child(1, None, None, board)
    child.jobs, child.limits, child.batch = [10, 11, 12, 13], [None] * 4, 1
    board.begin_batch(1)
    board._write(started=2, settled=1)
    events = PreforkPool._died(child, Lost(0, -9))
    assert events == [Settled([10]), Returned([11], ran=True), Lost(12, -9),
                      Returned([13], ran=False)]
    assert child.jobs == []  # the slot is free
    child.jobs, child.batch = [20], 2
    board.begin_batch(2)
    assert PreforkPool._died(child, TimedOut(0, 1.5)) == [TimedOut(20, 1.5)]
