"""A sink that cannot work at all stops the run before it starts (``ResultSink.check``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest

from cyclone_core.builtins.sinks import JsonlSink, SqliteSink
from cyclone_core.engine.delivery import check_sinks
from cyclone_core.errors import ConfigError, CycloneError
from cyclone_core.model import ResultSink

ONLY_BUILTINS = {"CYCLONE_LOAD_PLUGINS": "builtins"}


def test_an_unwritable_jsonl_path_stops_the_run_with_one_line(run_cyclone: Any, tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "results.jsonl"
    done = run_cyclone("run", "-g", "count=1", "--sink", "jsonl", "-s", f"jsonl.path={path}", env=ONLY_BUILTINS)
    assert done.returncode == 2
    assert done.stderr == f"error: sink 'jsonl': cannot open {path} for writing: No such file or directory\n"
    assert done.stdout == ""  # no run, no summary


def test_the_builtin_sinks_check_their_paths(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match=r"^sink 'sqlite': cannot open .*a-file/x.sqlite: unable to open"):
        check_sinks([SqliteSink(path=str(tmp_path / "a-file" / "x.sqlite"))])
    with pytest.raises(ConfigError, match=r"^sink 'jsonl': cannot open .*: Is a directory$"):
        check_sinks([JsonlSink(path=str(tmp_path))])
    good = [SqliteSink(path=str(tmp_path / "r.sqlite")), JsonlSink(path=str(tmp_path / "r.jsonl"))]
    check_sinks(good)  # creates them, as opening them would, and closes them again
    assert (tmp_path / "r.sqlite").is_file()
    assert (tmp_path / "r.jsonl").is_file()


@attrs.define(kw_only=True)
class _Quiet(ResultSink):
    """A sink with the default check, which must neither open nor write."""

    name: ClassVar[str] = "quiet"

    def open(self) -> None:
        raise AssertionError("never called")

    def write(self, results: Any) -> None:
        raise AssertionError("never called")


@attrs.define(kw_only=True)
class _Broken(ResultSink):
    name: ClassVar[str] = "broken"
    problem: str = "cannot work"

    def check(self) -> None:
        if self.problem == "plain":
            raise OSError(13, "Permission denied")
        raise CycloneError(f"{self.problem}\n(second line)")

    def write(self, results: Any) -> None:
        raise AssertionError("never called")


def test_a_failed_check_is_one_line_naming_the_sink() -> None:
    with pytest.raises(ConfigError) as caught:
        check_sinks([_Quiet(), _Broken()])  # the default check passes
    assert str(caught.value) == "sink 'broken': cannot work (second line)"
    assert caught.value.exit_code == 2
    with pytest.raises(ConfigError, match=r"^sink 'broken': PermissionError: \[Errno 13\] Permission denied$"):
        check_sinks([_Broken(problem="plain")])
