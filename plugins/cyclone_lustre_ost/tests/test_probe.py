"""The lustre-ost-io task against the stand-in file system and against a plain directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cyclone_lustre_ost.probe import LustreOstIoTask

from cyclone_core import Status, TaskContext, structure

METRICS = {
    "lustre_ost_write_bytes_per_second",
    "lustre_ost_read_bytes_per_second",
    "lustre_ost_write_seconds",
    "lustre_ost_read_seconds",
    "lustre_ost_probe_bytes",
}


def probe(fs, ost: int, **options) -> LustreOstIoTask:
    options.setdefault("total_size", "2M")
    return LustreOstIoTask(
        path=str(fs.mount), ost=ost, fsname=fs.fsname, lfs_bin=fs.lfs_bin, tool_timeout=10, **options
    )


def run(task: LustreOstIoTask, task_id: str = "run-1:42"):
    return task.execute(TaskContext(task_id=task_id))


def test_probe_measures_one_ost(lustre_standin) -> None:
    fs = lustre_standin(osts=[0, 10])
    outcome = run(probe(fs, 10, block_size="256K", slow_threshold=60))
    assert outcome.status is Status.OK, outcome.error
    by_name = {m.name: m for m in outcome.metrics}
    assert set(by_name) >= METRICS
    assert by_name["lustre_ost_probe_bytes"].value == 2 << 20
    for metric in outcome.metrics:
        assert metric.labels == {"fs": "testfs", "ost": "OST000a", "index": "10"}
    write = by_name["lustre_ost_write_seconds"].value
    assert 0 < write < 60
    assert by_name["lustre_ost_write_bytes_per_second"].value == pytest.approx((2 << 20) / write)
    assert by_name["lustre_ost_write_seconds"].timestamp <= by_name["lustre_ost_read_seconds"].timestamp
    assert by_name["lustre_ost_slow"].value == 0
    assert by_name["lustre_ost_active"].value == 1
    assert outcome.payload["state"] == "ok"
    assert outcome.payload["slow"] is False
    assert list(fs.mount.iterdir()) == []  # the probe file is gone


def test_inactive_ost_is_a_failed_row(lustre_standin) -> None:
    fs = lustre_standin(osts=[0, 10], inactive=[10])
    outcome = run(probe(fs, 10, active=False))
    assert outcome.status is Status.FAILED
    assert outcome.error == "OST000a is inactive"
    assert outcome.payload["state"] == "inactive"
    assert {m.name: m.value for m in outcome.metrics} == {"lustre_ost_probe_ok": 0.0, "lustre_ost_active": 0.0}
    assert outcome.metrics[0].labels["ost"] == "OST000a"


def test_misplaced_object_is_reported(lustre_standin) -> None:
    fs = lustre_standin(osts=[0, 3, 10], place_on={10: 3})
    outcome = run(probe(fs, 10))
    assert outcome.status is Status.FAILED
    assert outcome.error == "object placed on OST0003, not OST000a"
    assert outcome.payload["placed_on"] == "OST0003"
    assert list(fs.mount.iterdir()) == []


def test_ost_that_went_inactive_after_discovery_is_misplaced(lustre_standin) -> None:
    fs = lustre_standin(osts=[0, 1, 2])
    fs.set_ost(1, active=False)
    outcome = run(probe(fs, 1))  # the allocator skips it: the object lands on OST0002
    assert outcome.error == "object placed on OST0002, not OST0001"


def test_io_error_is_reported_and_cleaned_up(lustre_standin) -> None:
    fs = lustre_standin(osts=2, io_error=[1])
    outcome = run(probe(fs, 1))
    assert outcome.status is Status.FAILED
    assert outcome.payload["state"] == "io_error"
    assert outcome.error.startswith("write to ")
    assert outcome.error.endswith("failed: No space left on device")
    assert {m.name: m.value for m in outcome.metrics}["lustre_ost_probe_ok"] == 0
    assert list(fs.mount.iterdir()) == []


def test_lustre_tool_failure_and_hang(lustre_standin) -> None:
    fs = lustre_standin(osts=2, hang=[1])
    missing = LustreOstIoTask(path=str(fs.mount / "gone"), ost=0, fsname="testfs", lfs_bin=fs.lfs_bin)
    outcome = run(missing)
    assert outcome.payload["state"] == "lustre_error"
    assert "No such file or directory" in outcome.error
    hung = LustreOstIoTask(path=str(fs.mount), ost=1, fsname="testfs", lfs_bin=fs.lfs_bin, tool_timeout=1)
    outcome = run(hung)
    assert outcome.status is Status.FAILED
    assert "timed out after 1 s" in outcome.error
    assert list(fs.mount.iterdir()) == []


def test_plain_directory(tmp_path: Path) -> None:
    task = LustreOstIoTask(path=str(tmp_path), total_size="3M", block_size="1M", fsync=False, slow_threshold=1e-9)
    outcome = run(task, "run/with:odd chars")
    assert outcome.status is Status.OK, outcome.error
    assert {m.name for m in outcome.metrics} >= METRICS
    assert all(m.labels == {"fs": str(tmp_path)} for m in outcome.metrics)
    assert "lustre_ost_active" not in {m.name for m in outcome.metrics}
    assert outcome.payload["mode"] == "plain"
    assert outcome.payload["slow"] is True  # nothing is faster than a nanosecond
    assert {m.name: m.value for m in outcome.metrics}["lustre_ost_slow"] == 1
    assert os.listdir(tmp_path) == []


def test_unaligned_sizes_fall_back_to_dropping_the_cache(tmp_path: Path) -> None:
    outcome = run(LustreOstIoTask(path=str(tmp_path), total_size=10_000, block_size=3_000))
    assert outcome.status is Status.OK, outcome.error
    assert outcome.payload["direct_io"] is False
    assert outcome.payload["probe_bytes"] == 10_000


def test_plain_directory_that_does_not_exist(tmp_path: Path) -> None:
    outcome = run(LustreOstIoTask(path=str(tmp_path / "missing")))
    assert outcome.status is Status.FAILED
    assert "No such file or directory" in outcome.error


def test_options_are_checked() -> None:
    task = structure({"path": "/x", "ost": 3, "total_size": "1G", "slow_threshold": "2.5"}, LustreOstIoTask, where="t")
    assert (task.total_size, task.slow_threshold) == (1 << 30, 2.5)
    for bad, message in (
        ({"path": "/x", "block_size": 0}, "block_size must be positive"),
        ({"path": "/x", "ost": -1}, "ost: must be >= 0, got -1"),
        ({"path": "/x", "total_size": "lots"}, "total_size: expected a size"),
    ):
        with pytest.raises(Exception, match=message):
            structure(bad, LustreOstIoTask, where="task 'lustre-ost-io'")
