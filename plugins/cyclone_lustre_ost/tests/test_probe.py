"""The lustre-ost-io task against the stand-in file system and against a plain directory."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest
from cyclone_lustre_ost.probe import LustreOstIoTask, read_back

from cyclone_core import Status, TaskContext, structure

METRICS = {
    "cyclone_lustre_ost_write_bytes_per_second",
    "cyclone_lustre_ost_read_bytes_per_second",
    "cyclone_lustre_ost_write_seconds",
    "cyclone_lustre_ost_read_seconds",
    "cyclone_lustre_ost_probe_bytes",
    "cyclone_lustre_ost_probe_status",
    "cyclone_lustre_ost_probe_timestamp_seconds",
}
OST000A = {"fs": "testfs", "component": "ost", "target": "testfs-OST000a"}


def values(outcome) -> dict[str, float]:
    return {m.name: m.value for m in outcome.metrics}


def probe(fs, ost: int, **options) -> LustreOstIoTask:
    options.setdefault("total_size", "2M")
    return LustreOstIoTask(
        path=str(fs.mount), ost=ost, fsname=fs.fsname, lfs_bin=fs.lfs_bin, tool_timeout=10, **options
    )


def run(task: LustreOstIoTask, task_id: str = "run-1:42"):
    return task.execute(TaskContext(task_id=task_id))


def test_probe_measures_one_ost(lustre_standin) -> None:
    fs = lustre_standin(osts=[0, 10])
    outcome = run(probe(fs, 10, block_size="256K", slow_threshold=60, strict_placement=True))
    assert outcome.status is Status.OK, outcome.error
    by_name = {m.name: m for m in outcome.metrics}
    assert set(by_name) >= METRICS
    assert by_name["cyclone_lustre_ost_probe_bytes"].value == 2 << 20
    for metric in outcome.metrics:
        assert metric.labels == OST000A  # the exporters' component and target
    write = by_name["cyclone_lustre_ost_write_seconds"].value
    assert 0 < write < 60
    assert by_name["cyclone_lustre_ost_write_bytes_per_second"].value == pytest.approx((2 << 20) / write)
    assert by_name["cyclone_lustre_ost_write_seconds"].timestamp <= by_name["cyclone_lustre_ost_read_seconds"].timestamp
    assert (by_name["cyclone_lustre_ost_slow"].value, by_name["cyclone_lustre_ost_active"].value) == (0, 1)
    assert by_name["cyclone_lustre_ost_probe_status"].value == 1
    assert outcome.payload["state"] == "ok"
    assert outcome.payload["slow"] is False
    assert outcome.payload["placement"] == "lfs setstripe -o"
    assert outcome.payload["oss_cache"] == "dropped: lfs ladvise -a dontneed"
    assert outcome.payload["read_request_bytes"] == 4 << 20  # at least 4 MiB per read() call
    assert list(fs.mount.iterdir()) == []  # the probe file is gone


def test_inactive_ost_is_a_failed_row(lustre_standin) -> None:
    fs = lustre_standin(osts=[0, 10], inactive=[10])
    outcome = run(probe(fs, 10, active=False, inactive_reason="Input/output error"))
    assert outcome.status is Status.FAILED
    assert outcome.error == "OST000a is inactive: Input/output error"
    assert outcome.payload["state"] == "inactive"
    assert values(outcome) | {"cyclone_lustre_ost_probe_timestamp_seconds": 0} == {
        "cyclone_lustre_ost_probe_status": 0.0,
        "cyclone_lustre_ost_active": 0.0,
        "cyclone_lustre_ost_probe_timestamp_seconds": 0,
    }
    assert outcome.metrics[0].labels["target"] == "testfs-OST000a"


def test_misplaced_object_is_reported(lustre_standin) -> None:
    fs = lustre_standin(osts=[0, 3, 10], place_on={10: 3})
    outcome = run(probe(fs, 10))
    assert outcome.status is Status.FAILED
    assert outcome.error == "object placed on OST0003, not OST000a"
    assert outcome.payload["placed_on"] == "OST0003"
    assert list(fs.mount.iterdir()) == []


@pytest.mark.parametrize(
    ("problem", "state", "reason"),
    [
        ({"active": False}, "inactive", "inactive OST among your specified 1 OST(s)"),
        ({"flags": "S"}, "full", "No space left on device"),
        ({"flags": "R"}, "read_only", "Read-only file system"),
    ],
)
def test_strict_placement_reports_the_real_reason(lustre_standin, problem, state, reason) -> None:
    fs = lustre_standin(osts=[0, 1, 2])
    fs.set_ost(1, **problem)  # after discovery: the probe still thinks OST0001 is fine
    outcome = run(probe(fs, 1, strict_placement=True))
    assert outcome.status is Status.FAILED
    assert (outcome.payload["state"], outcome.error) == (state, f"OST0001 refused the object: {reason}")
    assert values(outcome)["cyclone_lustre_ost_probe_status"] == 0
    assert list(fs.mount.iterdir()) == []
    loose = run(probe(fs, 1))  # -i: the MDS moves on silently; only the placement check sees it
    assert loose.error == "object placed on OST0002, not OST0001"


def test_drained_and_retired_osts_are_no_fault(lustre_standin) -> None:
    fs = lustre_standin(osts=[0, 1, 2], drained=[1])
    found = run(probe(fs, 1, strict_placement=True))  # not listed as drained: -o finds out
    assert (found.status, found.error, found.payload["state"]) == (Status.OK, None, "drained")
    assert found.payload["detail"] == "OST0001 takes no new objects (No buffer space available)"
    assert values(found)["cyclone_lustre_ost_probe_status"] == 2
    assert values(found)["cyclone_lustre_ost_active"] == 1
    listed = run(probe(fs, 1, admin_state="drained"))
    assert (listed.status, listed.payload["detail"]) == (Status.OK, "OST0001 is drained")
    retired = run(probe(fs, 2, active=False, admin_state="retired"))
    assert (retired.status, retired.payload["state"]) == (Status.OK, "retired")
    assert values(retired)["cyclone_lustre_ost_probe_status"] == 3
    assert values(retired)["cyclone_lustre_ost_active"] == 0
    assert list(fs.mount.iterdir()) == []


def test_ost_that_went_inactive_after_discovery_is_misplaced(lustre_standin) -> None:
    fs = lustre_standin(osts=[0, 1, 2], version="2.12")
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
    assert values(outcome)["cyclone_lustre_ost_probe_status"] == 0
    assert list(fs.mount.iterdir()) == []


def test_read_back_falls_back_when_read_refuses_o_direct(tmp_path: Path) -> None:
    file = tmp_path / "data"
    file.write_bytes(b"x" * (1 << 20))
    buffer = mmap.mmap(-1, 2 << 20)
    with memoryview(buffer) as whole, whole[1 : 1 + (1 << 20)] as misaligned:
        # open(O_DIRECT) succeeds; a buffer off every block boundary makes read() fail with EINVAL
        read = read_back(str(file), 1 << 20, 1 << 20, misaligned)
        aligned = read_back(str(file), 1 << 20, 1 << 20, whole)
    buffer.close()
    if aligned.direct_error.startswith("open()"):
        pytest.skip(f"{tmp_path} has no O_DIRECT at all")
    assert (aligned.bytes, aligned.direct, aligned.direct_error) == (1 << 20, True, "")
    assert (read.bytes, read.direct, read.direct_error) == (1 << 20, False, "read() with O_DIRECT: EINVAL")


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
    assert "cyclone_lustre_ost_active" not in {m.name for m in outcome.metrics}
    assert outcome.payload["mode"] == "plain"
    assert outcome.payload["oss_cache"] == "none: not on Lustre"
    assert outcome.payload["slow"] is True  # nothing is faster than a nanosecond
    assert values(outcome)["cyclone_lustre_ost_slow"] == 1
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
