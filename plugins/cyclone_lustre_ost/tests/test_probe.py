"""The lustre-ost-io task against the stand-in file system and against a plain directory."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest
from cyclone_lustre_ost.local import LustreLocal
from cyclone_lustre_ost.probe import LustreOstIoTask, read_back

from cyclone_core import Status, TaskContext, structure
from cyclone_core.testing import run_dispatched

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
    return LustreOstIoTask(path=str(fs.mount), ost=ost, fsname=fs.fsname, tool_timeout=10, **options)


def run(task: LustreOstIoTask, fs=None, task_id: str = "run-1:42"):
    """Execute the task as a controller configured for ``fs`` (its tools, its mount as the
    root) would; without ``fs``, as one whose only root is the task's directory."""
    local = fs.settings() if fs is not None else LustreLocal(roots=(task.path,))
    return task.execute(TaskContext(task_id=task_id, local=local))


def test_probe_measures_one_ost(lustre_standin) -> None:
    fs = lustre_standin(osts=[0, 10])
    outcome = run(probe(fs, 10, block_size="256K", slow_threshold=60, strict_placement=True), fs)
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
    outcome = run(probe(fs, 10, active=False, inactive_reason="Input/output error"), fs)
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
    outcome = run(probe(fs, 10), fs)
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
    outcome = run(probe(fs, 1, strict_placement=True), fs)
    assert outcome.status is Status.FAILED
    assert (outcome.payload["state"], outcome.error) == (state, f"OST0001 refused the object: {reason}")
    assert values(outcome)["cyclone_lustre_ost_probe_status"] == 0
    assert list(fs.mount.iterdir()) == []
    loose = run(probe(fs, 1), fs)  # -i: the MDS moves on silently; only the placement check sees it
    assert loose.error == "object placed on OST0002, not OST0001"


def test_drained_and_retired_osts_are_no_fault(lustre_standin) -> None:
    fs = lustre_standin(osts=[0, 1, 2], drained=[1])
    found = run(probe(fs, 1, strict_placement=True), fs)  # not listed as drained: -o finds out
    assert (found.status, found.error, found.payload["state"]) == (Status.OK, None, "drained")
    assert found.payload["detail"] == "OST0001 takes no new objects (No buffer space available)"
    assert values(found)["cyclone_lustre_ost_probe_status"] == 2
    assert values(found)["cyclone_lustre_ost_active"] == 1
    listed = run(probe(fs, 1, admin_state="drained"), fs)
    assert (listed.status, listed.payload["detail"]) == (Status.OK, "OST0001 is drained")
    retired = run(probe(fs, 2, active=False, admin_state="retired"), fs)
    assert (retired.status, retired.payload["state"]) == (Status.OK, "retired")
    assert values(retired)["cyclone_lustre_ost_probe_status"] == 3
    assert values(retired)["cyclone_lustre_ost_active"] == 0
    assert list(fs.mount.iterdir()) == []


def test_ost_that_went_inactive_after_discovery_is_misplaced(lustre_standin) -> None:
    fs = lustre_standin(osts=[0, 1, 2], version="2.12")
    fs.set_ost(1, active=False)
    outcome = run(probe(fs, 1), fs)  # the allocator skips it: the object lands on OST0002
    assert outcome.error == "object placed on OST0002, not OST0001"


def test_io_error_is_reported_and_cleaned_up(lustre_standin) -> None:
    fs = lustre_standin(osts=2, io_error=[1])
    outcome = run(probe(fs, 1), fs)
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
    missing = LustreOstIoTask(path=str(fs.mount / "gone"), ost=0, fsname="testfs")
    outcome = run(missing, fs)
    assert outcome.payload["state"] == "lustre_error"
    assert "No such file or directory" in outcome.error
    hung = LustreOstIoTask(path=str(fs.mount), ost=1, fsname="testfs", tool_timeout=1)
    outcome = run(hung, fs)
    assert outcome.status is Status.FAILED
    assert "timed out after 1 s" in outcome.error
    assert list(fs.mount.iterdir()) == []


def test_plain_directory(tmp_path: Path) -> None:
    task = LustreOstIoTask(path=str(tmp_path), total_size="3M", block_size="1M", fsync=False, slow_threshold=1e-9)
    outcome = run(task, task_id="run/with:odd chars")
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


# -- what the controller decides ---------------------------------------------------------------


def test_the_controller_runs_its_own_lfs_with_its_own_sudo(lustre_standin, tmp_path: Path) -> None:
    fs = lustre_standin(osts=2)
    sudo = tmp_path / "bin" / "sudo"
    sudo.parent.mkdir()
    sudo.write_text(f'#!/bin/sh\n[ "$1" = "-n" ] || exit 99\necho "$2" >> {tmp_path / "sudo.log"}\nshift\nexec "$@"\n')
    sudo.chmod(0o755)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{sudo.parent}{os.pathsep}{os.environ['PATH']}")
        outcome = probe(fs, 1).execute(TaskContext(task_id="t", local=fs.settings(sudo=True)))
    assert outcome.status is Status.OK, outcome.error
    assert set((tmp_path / "sudo.log").read_text().split()) == {fs.lfs_bin}


@pytest.mark.parametrize(
    ("roots", "error"),
    [
        ((), "refused: this controller runs no Lustre task on a path (controller.local.lustre.roots is empty)"),
        (("/nonexistent/root",), "refused: outside this controller's roots /nonexistent/root"),
    ],
)
def test_a_path_outside_the_controllers_roots_is_refused_untouched(lustre_standin, roots, error) -> None:
    fs = lustre_standin(osts=2)
    outcome = probe(fs, 1).execute(TaskContext(task_id="t", local=fs.settings(roots=roots)))
    assert outcome.status is Status.FAILED
    assert outcome.error.startswith(f"{fs.mount}: {error}")
    assert outcome.payload["state"] == "refused"
    assert list(fs.mount.iterdir()) == []
    assert fs.layout(fs.mount / "anything") == []


def test_dotdot_and_symbolic_links_do_not_leave_the_roots(lustre_standin, tmp_path: Path) -> None:
    fs = lustre_standin(osts=1)
    outside = tmp_path / "outside"
    outside.mkdir()
    (fs.mount / "link").symlink_to(outside)
    for path in (fs.mount / ".." / ".." / "outside", fs.mount / "link"):
        task = LustreOstIoTask(path=str(path), total_size="1M")
        outcome = task.execute(TaskContext(task_id="t", local=fs.settings()))
        assert outcome.status is Status.FAILED
        assert "refused: outside this controller's roots" in outcome.error
    assert list(outside.iterdir()) == []


def test_a_master_that_sends_a_task_naming_an_executable_gets_it_refused(lustre_standin, tmp_path: Path) -> None:
    fs = lustre_standin(osts=2)
    evil = tmp_path / "evil"
    evil.write_text(f"#!/bin/sh\ntouch {tmp_path / 'evil-ran'}\n")
    evil.chmod(0o755)
    for field in ("lfs_bin", "lctl_bin", "sudo"):
        value = True if field == "sudo" else str(evil)
        args = {"path": str(fs.mount), "ost": 1, "fsname": fs.fsname, "total_size": "1M", field: value}
        result = run_dispatched("lustre-ost-io", args, local=fs.local())
        assert result.status is Status.FAILED
        assert result.error.startswith("arguments of task type 'lustre-ost-io': ")
        assert field in result.error
    assert not (tmp_path / "evil-ran").exists()
    assert list(fs.mount.iterdir()) == []
    # Its own fields only: the same task runs, with the controller's lfs.
    args = {"path": str(fs.mount), "ost": 1, "fsname": fs.fsname, "total_size": "1M"}
    assert run_dispatched("lustre-ost-io", args, local=fs.local()).status is Status.OK
