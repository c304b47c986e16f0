"""The ``file-create`` generator's rounds, in-flight bookkeeping and examination, on a plain
directory (the Lustre side is in test_lustre.py)."""

from __future__ import annotations

import os
import stat
from types import SimpleNamespace

import pytest
from cyclone_core import CycloneError, Status
from cyclone_core.convert import structure

from cyclone_file_create import FileCreateGenerator
from cyclone_file_create import generator as generator_module
from cyclone_file_create.generator import ENGINE_GRACE


def generator(**options) -> FileCreateGenerator:
    return structure(options, FileCreateGenerator, where="generator 'file-create'")


def drain(tasks) -> None:
    for item in tasks:
        assert item is None


def test_one_shot_plain_directory(tmp_path, drive) -> None:
    driver = drive(generator(path=str(tmp_path), rounds=1, timeout_ms=3000, count=3))
    assert driver.pull() is True
    assert driver.keys == ["plain"]
    spec = driver.handed_out[0][1]
    assert spec.timeout == 3 + ENGINE_GRACE
    assert (spec.task.mode, spec.task.path, spec.task.count) == ("plain", str(tmp_path), 3)
    [result] = driver.results
    assert result.status is Status.OK
    assert result.payload["files"] == 3


def test_forced_plain_mode(tmp_path, drive) -> None:
    driver = drive(generator(path=str(tmp_path), rounds=1, mode="plain"))
    assert driver.pull() is True
    assert [spec.task.mode for _, spec in driver.handed_out] == ["plain"]


def test_rounds_are_counted(tmp_path, drive) -> None:
    driver = drive(generator(path=str(tmp_path), rounds=3, interval=0))
    assert driver.pull() is True
    assert driver.keys == ["plain"] * 3
    assert all(result.ok for result in driver.results)


def test_rounds_start_interval_apart(tmp_path, drive, monkeypatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(generator_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    driver = drive(generator(path=str(tmp_path), rounds=2, interval=60, mode="plain"))
    assert driver.pull(until=lambda: len(driver.handed_out) == 1) is False
    asked = 0

    def asked_often() -> bool:
        nonlocal asked
        asked += 1
        return asked > 20

    clock[0] += 59.9
    assert driver.pull(until=asked_often) is False  # yields None until the interval has passed
    assert len(driver.handed_out) == 1
    clock[0] += 0.1
    assert driver.pull() is True
    assert driver.keys == ["plain", "plain"]


def test_check_in_flight_is_not_handed_out_again(tmp_path, drive) -> None:
    driver = drive(generator(path=str(tmp_path), rounds=4, interval=0))
    assert driver.pull(settle=False) is True  # nothing ever settles: rounds 2-4 skip it
    assert driver.keys == ["plain"]


def test_settled_check_is_handed_out_again(tmp_path, drive) -> None:
    gen = generator(path=str(tmp_path), rounds=0, interval=0)
    driver = drive(gen)
    assert driver.pull(settle=False, until=lambda: len(driver.handed_out) == 1) is False
    first = driver.handed_out[0][1]
    # Many rounds pass while the check is running; none hands it out again.
    rounds_seen = 0

    def many_rounds() -> bool:
        nonlocal rounds_seen
        rounds_seen += 1
        return rounds_seen > 50

    assert driver.pull(settle=False, until=many_rounds) is False
    assert driver.keys == ["plain"]
    driver.settle(first)
    assert driver.pull(settle=False, until=lambda: len(driver.handed_out) == 2) is False
    assert driver.keys == ["plain", "plain"]


def test_missing_path_ends_the_run_with_one_line(tmp_path, drive) -> None:
    driver = drive(generator(path=str(tmp_path / "nope"), rounds=1))
    with pytest.raises(CycloneError) as caught:
        driver.pull()
    assert str(caught.value) == f"path {tmp_path / 'nope'} does not exist"


def test_examination_never_blocks_the_generator(tmp_path, drive) -> None:
    # An lfs that hangs: the generator yields None while it runs, and reports it once killed.
    started = tmp_path / "lfs-started"
    lfs = tmp_path / "lfs"
    lfs.write_text(f"#!/bin/sh\ntouch {started}\nexec sleep 60\n")
    lfs.chmod(lfs.stat().st_mode | stat.S_IXUSR)
    gen = generator(path=str(tmp_path), mode="lustre", lfs_bin=str(lfs), timeout_ms=1500, rounds=1)
    tasks = gen.tasks()
    nones = 0
    while not started.exists():
        assert next(tasks) is None
        nones += 1
    assert next(tasks) is None  # lfs is running and the generator still answers
    with pytest.raises(CycloneError) as caught:
        drain(tasks)
    message = str(caught.value)
    assert message.startswith(f"{lfs} ")
    assert message.endswith(f" {tmp_path} timed out after 1.5 s")
    gen.close()


def test_plain_mode_ignores_ost_selection(tmp_path, drive, caplog) -> None:
    driver = drive(generator(path=str(tmp_path), rounds=1, mode="plain", osts="0-3"))
    assert driver.pull() is True
    assert driver.keys == ["plain"]
    assert "the osts and mdts options are ignored" in caplog.text


def test_files_are_left_nowhere(tmp_path, drive) -> None:
    driver = drive(generator(path=str(tmp_path), rounds=2, interval=0, count=4))
    assert driver.pull() is True
    assert os.listdir(tmp_path) == []
