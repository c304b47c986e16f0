"""What every file-creation check shares: its outcome, its time budget, and running it within it.

A check runs in a daemon thread that the task waits for until ``timeout_ms`` is used up.  A
file system that hangs can block any system call (``open``, ``unlink``, ``stat``), not just
the ``lfs`` commands, and only a thread lets the task report ``timeout`` on time whatever is
stuck.  The thread checks the budget before each step, so it stops starting new work once the
task has given up; commands it runs get the remaining time as their own timeout and are killed
when it runs out.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs

__all__ = ("Budget", "CheckError", "CheckReport", "CheckStatus", "CheckTimeout", "run_within")


class CheckStatus(enum.StrEnum):
    """The fine-grained outcome of one check (carried in the payload and the metric labels)."""

    #: The file was created where it was asked for, and deleted.
    OK = "ok"
    #: Lustre placed the object on another OST than the one asked for.
    FAILED = "failed"
    #: A command or system call failed; the error says which, with its message.
    ERROR = "error"
    #: The check did not finish within ``timeout_ms``.
    TIMEOUT = "timeout"
    #: The OST was inactive when the round started; nothing was created on it.
    INACTIVE = "inactive"


class CheckError(Exception):
    """A step of a check failed; the message is the one line reported."""


class CheckTimeout(CheckError):
    """The budget ran out, or a command was killed because it did."""


@attrs.frozen
class CheckReport:
    """The outcome of one check.

    :param status: the fine-grained outcome.
    :param error: one line saying what went wrong, or ``None``.
    :param seconds: the creation latency measured, if the file was created.
    :param details: check-specific data for the payload (placement, per-step timings).
    """

    status: CheckStatus
    error: str | None = None
    seconds: float | None = None
    details: dict[str, Any] = attrs.field(factory=dict)


@attrs.define
class Budget:
    """The time a check may take, and the step it is in (named in a timeout report)."""

    timeout_ms: int
    started: float = attrs.field(factory=time.monotonic)
    current: str = "starting"

    def remaining(self) -> float:
        """Seconds left; may be negative."""
        return self.started + self.timeout_ms / 1000 - time.monotonic()

    def expired_message(self) -> str:
        """The one line reported when the budget ran out."""
        return f"check did not finish within {self.timeout_ms} ms; stuck in: {self.current}"

    @contextmanager
    def step(self, what: str, *, cleanup: bool = False) -> Iterator[float]:
        """Enter the step ``what`` and give the seconds left for it.

        An :class:`OSError` inside becomes a :class:`CheckError` naming the step.  A budget that
        is already used up raises :class:`CheckTimeout` before the step starts, unless the step
        is a ``cleanup`` (deleting what the check created), which runs whatever time is left.
        """
        self.current = what
        remaining = self.remaining()
        if remaining <= 0 and not cleanup:
            raise CheckTimeout(self.expired_message())
        try:
            yield remaining
        except OSError as exc:
            raise CheckError(f"{what}: {exc.strerror or exc}") from exc


def run_within(check: Callable[[], CheckReport], budget: Budget) -> CheckReport:
    """Run ``check`` in a daemon thread and wait for it at most until ``budget`` runs out.

    A :class:`CheckError` raised by the check becomes an ``error`` report (``timeout`` for a
    :class:`CheckTimeout`); any other exception is re-raised here, so the task fails with it.
    """
    outcome: list[CheckReport | BaseException] = []

    def target() -> None:
        try:
            outcome.append(check())
        except CheckTimeout as exc:
            outcome.append(CheckReport(CheckStatus.TIMEOUT, error=str(exc)))
        except CheckError as exc:
            outcome.append(CheckReport(CheckStatus.ERROR, error=str(exc)))
        except BaseException as exc:  # handed to the task's thread, which raises it
            outcome.append(exc)

    thread = threading.Thread(target=target, name="file-create-check", daemon=True)
    thread.start()
    thread.join(max(budget.remaining(), 0))
    if not outcome:
        return CheckReport(CheckStatus.TIMEOUT, error=budget.expired_message())
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]
