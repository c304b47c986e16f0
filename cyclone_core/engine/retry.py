"""The retry policy: how each way an attempt can end is counted, and what happens when its
budget is spent.  One table, declared once; the scheduler, the run counters, the metrics
labels, the journal's columns and docs/engine.md's table all come from it.

An attempt that did not end with a terminal result ends one of the ways in :class:`Ending`.
Its :class:`Rule` says which per-task budget it counts against (``None``: none, it is not the
task's fault), which run counter counts it, what the attempt history records, and the verdict
when the budget is spent: ``failed`` (the failure stands as the task's result) or
``quarantined`` (the task is set aside with its attempt history, so one that keeps killing
workers does not loop forever).
"""

from __future__ import annotations

import enum

import attrs

from cyclone_core.model import Status

__all__ = (
    "BUDGETS",
    "ENDING_OF_STATUS",
    "RETRY_POLICY",
    "Budget",
    "Ending",
    "Rule",
    "attempt_counters",
    "markdown_table",
)


class Budget(enum.Enum):
    """A per-task retry budget: its name (the task record's counter and the journal column),
    the ``[master]`` setting that sizes it, and how a quarantine error names it."""

    FAILED = ("failed", "max_failed_retries", "failed")
    CRASHED = ("crashed", "max_crash_retries", "crashed or timed out")
    LOST = ("lost", "max_lost_retries", "lost")

    def __init__(self, counter: str, setting: str, spent: str) -> None:
        self.counter = counter
        self.setting = setting
        self.spent = spent


#: The budgets' counter names, in journal column order.
BUDGETS = tuple(budget.counter for budget in Budget)


class Ending(enum.Enum):
    """How an attempt ended without a result that settles its task."""

    #: The task reported failure (it raised, or returned a failed outcome).
    FAILED = "failed"
    #: The worker process died under it (signal, exit).
    CRASHED = "crashed"
    #: The controller killed it at its timeout.
    TIMEOUT = "timeout"
    #: Its lease ended without a result: the controller left, went silent, forgot the task, or
    #: kept it past its deadline.
    LOST = "lost"
    #: A draining controller returned it unstarted.
    HANDED_BACK = "handed_back"
    #: Its controller said Goodbye while still holding it (a controller may not: it hands
    #: tasks back first), so the loss is the controller's doing, not the task's.
    ABANDONED = "abandoned"
    #: Its controller's key was revoked.
    REVOKED = "revoked"


@attrs.frozen
class Rule:
    """What one :class:`Ending` means for the task and the run."""

    #: The budget it counts against; ``None``: it costs the task nothing.
    budget: Budget | None
    #: The run counter (``Stats`` field, metrics label) of attempts ended this way, if any.
    counter: str | None
    #: The status the attempt history records; ``None``: no history entry (it did not run).
    recorded_as: Status | None
    #: The task's verdict once the budget is spent (``None`` without a budget).
    when_spent: Status | None = None
    #: Prefix of the error recorded with the attempt.
    prefix: str = ""


RETRY_POLICY: dict[Ending, Rule] = {
    Ending.FAILED: Rule(Budget.FAILED, None, Status.FAILED, when_spent=Status.FAILED),
    Ending.CRASHED: Rule(Budget.CRASHED, "crashed", Status.CRASHED, when_spent=Status.QUARANTINED),
    Ending.TIMEOUT: Rule(Budget.CRASHED, "timed_out", Status.TIMEOUT, when_spent=Status.QUARANTINED),
    Ending.LOST: Rule(Budget.LOST, "lost", Status.CRASHED, when_spent=Status.QUARANTINED, prefix="lost: "),
    Ending.HANDED_BACK: Rule(None, None, None),
    # Losses a controller causes by misbehaving, or by being revoked, cost the task nothing.
    Ending.ABANDONED: Rule(None, "lost", Status.CRASHED, prefix="abandoned: "),
    Ending.REVOKED: Rule(None, "lost", Status.CRASHED, prefix="revoked: "),
}
assert set(RETRY_POLICY) == set(Ending), "every ending needs a rule"

#: The ending of each status a controller reports for an attempt that did not succeed.
ENDING_OF_STATUS = {Status.FAILED: Ending.FAILED, Status.CRASHED: Ending.CRASHED, Status.TIMEOUT: Ending.TIMEOUT}


def attempt_counters() -> dict[str, Ending]:
    """Run counters of ended attempts (``timed_out``, ``crashed``, ``lost``) and their ending."""
    return {rule.counter: ending for ending, rule in RETRY_POLICY.items() if rule.counter is not None}


def markdown_table() -> str:
    """The policy as the Markdown table docs/engine.md shows (a test keeps the two equal)."""
    lines = [
        "| The attempt ended | Budget | Counted in | History records | When the budget is spent |",
        "|---|---|---|---|---|",
    ]
    for ending, rule in RETRY_POLICY.items():
        budget = f"`{rule.budget.setting}`" if rule.budget else "none"
        counter = f"`{rule.counter}`" if rule.counter else "-"
        recorded = f"`{rule.recorded_as.value}`" if rule.recorded_as else "nothing (it did not run)"
        spent = f"**{rule.when_spent.value}**" if rule.budget and rule.when_spent else "-"
        lines.append(f"| `{ending.value}` | {budget} | {counter} | {recorded} | {spent} |")
    return "\n".join(lines)
