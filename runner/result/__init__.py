"""Results: AsyncResult, EagerResult, ResultSet, GroupResult, allow_join_result."""

from runner.result.async_result import (
    E_WOULDBLOCK,
    AsyncResult,
    EagerResult,
    IncompleteStream,
    allow_join_result,
    assert_will_not_block,
    denied_join_result,
    result_from_tuple,
    task_join_will_block,
)
from runner.result.sets import GroupResult, ResultSet

__all__ = ["E_WOULDBLOCK", "AsyncResult", "EagerResult", "GroupResult", "IncompleteStream",
           "ResultSet", "allow_join_result", "assert_will_not_block", "denied_join_result",
           "result_from_tuple", "task_join_will_block"]
