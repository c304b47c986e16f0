"""A sink for the engine's end-to-end tests, installed only by putting this directory on
``PYTHONPATH`` (its ``.dist-info`` declares the ``cyclone`` entry point).

``probe`` appends every result it is given to a JSON-lines file, without removing duplicates,
so a test sees exactly what was delivered; it fails while the file ``down_while`` exists.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import ClassVar

import attrs

from cyclone_core import Result, ResultSink, hookimpl


@attrs.define(kw_only=True)
class ProbeSink(ResultSink):
    """Records every delivery; down while ``down_while`` exists."""

    name: ClassVar[str] = "probe"
    path: str
    down_while: str = ""

    def write(self, results: Sequence[Result]) -> None:
        if self.down_while and os.path.exists(self.down_while):
            raise ConnectionError(f"probe sink is down ({self.down_while} exists)")
        lines = "".join(
            json.dumps(
                {
                    "task_id": r.task_id,
                    "key": r.key,
                    "status": r.status.value,
                    "attempt": r.attempt,
                    "controller": r.controller,
                    "history": [a.status.value for a in r.history],
                    "error": r.error,
                }
            )
            + "\n"
            for r in results
        )
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(lines)
            out.flush()
            os.fsync(out.fileno())


@hookimpl
def cyclone_sinks() -> list[type[ResultSink]]:
    return [ProbeSink]
