"""Shared fixtures: run a task spec the way a worker would and report its result back."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from cyclone_core import Result, TaskContext, TaskGenerator, TaskSpec

_ids = itertools.count(1)


@pytest.fixture
def settle() -> Callable[[TaskGenerator, TaskSpec], Result]:
    """``settle(generator, spec)`` executes the spec's task and feeds the result back."""

    def run(generator: TaskGenerator, spec: TaskSpec) -> Result:
        task_id = f"test-run:{next(_ids)}"
        outcome = spec.task.execute(TaskContext(task_id=task_id))
        result = Result(
            task_id=task_id,
            task_type=spec.task.name,
            status=outcome.status,
            key=spec.key,
            error=outcome.error,
            metrics=outcome.metrics,
            payload=outcome.payload,
        )
        generator.on_result(result)
        return result

    return run
