"""Fixtures: drive the ``file-create`` generator and its tasks in-process, as the master would."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
from cyclone_core import Outcome, Result, TaskContext, TaskGenerator, TaskSpec
from cyclone_lustre_ost.local import LustreLocal

_ids = itertools.count(1)


def run_task(spec: TaskSpec, local: LustreLocal) -> Result:
    """Execute a handed-out task in this process, with a controller's ``local`` settings, and
    build its result as the engine would."""
    task_id = f"test-{next(_ids)}"
    started = time.time()
    outcome = spec.task.execute(TaskContext(task_id=task_id, timeout=spec.timeout, local=local))
    assert isinstance(outcome, Outcome)
    return Result(
        task_id=task_id,
        task_type=spec.task.name,
        status=outcome.status,
        key=spec.key,
        started_at=started,
        duration=time.time() - started,
        error=outcome.error,
        metrics=outcome.metrics,
        payload=outcome.payload,
    )


@attrs.define
class Driver:
    """Pulls tasks from a generator the way the master does: lazily, asking again a moment
    after ``None``, with a deadline so a generator that never ends fails the test."""

    generator: TaskGenerator
    handed_out: list[tuple[float, TaskSpec]] = attrs.field(factory=list)
    results: list[Result] = attrs.field(factory=list)
    _tasks: Iterator[TaskSpec | None] | None = None

    def pull(self, *, settle: bool = True, until: Callable[[], bool] | None = None, deadline: float = 20.0) -> bool:
        """Pull until the generator ends (``True``) or ``until()`` holds (``False``).

        With ``settle``, each task is executed at once and its result fed back through
        ``on_result``; otherwise it stays in flight.
        """
        if self._tasks is None:
            self._tasks = iter(self.generator.tasks())
        end = time.monotonic() + deadline
        while until is None or not until():
            assert time.monotonic() < end, "the generator did not get there within the deadline"
            item = next(self._tasks, StopIteration)
            if item is StopIteration:
                return True
            if item is None:
                time.sleep(0.005)  # the master asks again a moment later
                continue
            assert isinstance(item, TaskSpec)
            self.handed_out.append((time.monotonic(), item))
            if settle:
                self.settle(item)
        return False

    def settle(self, spec: TaskSpec) -> Result:
        """Run ``spec`` and report its result to the generator.  It runs as on a controller
        configured like the generator's master: the same Lustre tools, and the generator's
        ``path`` as its only root."""
        gen: Any = self.generator
        result = run_task(spec, LustreLocal(lfs=gen.lfs_bin, lctl=gen.lctl_bin, sudo=gen.sudo, roots=(gen.path,)))
        self.results.append(result)
        self.generator.on_result(result)
        return result

    @property
    def keys(self) -> list[str | None]:
        """Keys of the tasks handed out so far, in order."""
        return [spec.key for _, spec in self.handed_out]


@pytest.fixture
def drive() -> Iterator[Callable[[TaskGenerator], Driver]]:
    """``drive(generator)`` -> a :class:`Driver`; every generator is closed afterwards."""
    generators: list[TaskGenerator] = []

    def make(generator: TaskGenerator) -> Driver:
        generators.append(generator)
        return Driver(generator)

    yield make
    for generator in generators:
        generator.close()
