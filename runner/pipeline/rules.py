"""Trigger rules: whether a step runs, from the states of the steps it needs (Airflow's names).

``decide`` is called inside the atomic change of a run record, so a step's fate is settled once
(one of two workers finishing its last two needs at the same moment sees it ``pending``).

A need that failed with ``ignore_failure: true`` counts as a success for every rule but
``one_failed`` and ``all_failed`` (the shorthand from before trigger rules). A step skipped
because a need failed is ``upstream_failed`` (Airflow's word): ``all_failed`` and
``one_failed`` count it as failed, ``none_skipped`` does not count it as skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

DEFAULT_RULE = "all_success"

Decision = Literal["wait", "run", "skip", "upstream_failed"]


def need_state(state: str, ignore_failure: bool, upstream_failed: bool) -> str:
    """The state a rule sees for one need: ``success``, ``failed``, ``failed_ok`` (failed with
    ``ignore_failure``), ``upstream_failed``, ``skipped`` or ``waiting``."""
    if state == "failed":
        return "failed_ok" if ignore_failure else "failed"
    if state == "skipped" and upstream_failed:
        return "upstream_failed"
    if state in ("skipped", "cancelled"):
        return "skipped"
    if state == "success":
        return "success"
    return "waiting"


def decide(rule: str | None, needs: Sequence[str]) -> Decision:
    """What a step with trigger ``rule`` does, given its needs' states (see ``need_state``)."""
    rule = rule or DEFAULT_RULE
    done = "waiting" not in needs
    ok = {"success", "failed_ok"}
    failed = {"failed", "upstream_failed"}
    if rule == "all_success":
        if any(s in failed for s in needs):
            return "upstream_failed"
        if any(s == "skipped" for s in needs):
            return "skip"
        return "run" if done else "wait"
    if rule == "all_done":
        return "run" if done else "wait"
    if rule == "all_failed":
        if any(s in ("success", "skipped") for s in needs):
            return "skip"
        return "run" if done else "wait"
    if rule == "one_failed":
        if any(s in failed or s == "failed_ok" for s in needs):
            return "run"
        return "skip" if done else "wait"
    if rule == "one_success":
        if any(s in ok for s in needs):
            return "run"
        if not done:
            return "wait"
        return "upstream_failed" if all(s in failed for s in needs) else "skip"
    if rule == "none_failed":
        if any(s in failed for s in needs):
            return "upstream_failed"
        return "run" if done else "wait"
    if rule == "none_skipped":
        if any(s == "skipped" for s in needs):
            return "skip"
        return "run" if done else "wait"
    raise ValueError(f"unknown trigger rule {rule!r}")
