"""The Lustre check and generator against the stand-in ``lfs`` of cyclone-lustre-ost."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from cyclone_core import CycloneError, Outcome, Status, TaskContext
from cyclone_core.convert import structure
from cyclone_core.testing import run_dispatched

from cyclone_file_create import FileCreateGenerator, FileCreateTask


def metrics_of(outcome: Outcome) -> dict[str, tuple[float, dict[str, str]]]:
    return {metric.name: (metric.value, metric.labels) for metric in outcome.metrics}


def lustre_task(fs, *, mdt: int = 0, ost: int = 0, **options) -> FileCreateTask:
    (fs.mount / f"mdt{mdt}").mkdir(exist_ok=True)
    return FileCreateTask(
        path=str(fs.mount),
        mode="lustre",
        fsname=fs.fsname,
        mdt_index=mdt,
        ost_index=ost,
        **options,
    )


def run(task: FileCreateTask, fs, **settings) -> Outcome:
    """Execute the task as a controller configured for the stand-in ``fs`` (its tools, its
    mount as the root; ``settings`` override) would."""
    return task.execute(TaskContext(task_id="test-1", local=fs.settings(**settings)))


def lfs_processes(fs) -> list[int]:
    """Stand-in tool processes of ``fs`` still alive (found by the state file in their command)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if str(fs.state).encode() in environ:
            found.append(int(pid))
    return found


def wait_until(condition, deadline: float = 10.0) -> bool:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


LABELS = {"target": "testfs", "mdt_index": "0", "ost_index": "2"}  # the Cyclone 2.x series
NEW_LABELS = {"fs": "testfs", "component": "ost", "target": "testfs-OST0002", "mdt": "testfs-MDT0000"}


def files_in(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if not p.is_dir()]


def test_ok(lustre_standin) -> None:
    fs = lustre_standin(osts=4)
    outcome = run(lustre_task(fs, ost=2), fs)
    assert outcome.status is Status.OK, outcome.error
    metrics = metrics_of(outcome)
    assert metrics["cyclone_lustre_file_creation_check"] == (1.0, LABELS)
    assert metrics["cyclone_lustre_file_creation_error"] == (0.0, LABELS)
    seconds, labels = metrics["cyclone_lustre_file_creation_seconds"]
    assert labels == {**NEW_LABELS, "check": "ok"}
    assert metrics["cyclone_lustre_file_creation_timestamp_seconds"][1] == NEW_LABELS
    assert 0 < seconds < 1  # the in-process open(), no lfs or sudo start-up in it
    assert outcome.payload["check"] == "ok"
    assert (outcome.payload["ost"], outcome.payload["placed_ost_index"]) == ("OST0002", 2)
    assert outcome.payload["seconds"] == seconds
    file = outcome.payload["file"]
    assert file.startswith(f"{fs.mount}/mdt0/ost2/")  # the pair's directory, pinned to OST0002
    assert fs.layout(file) == [2]
    assert not os.path.lexists(file)  # ... and deleted
    assert fs.tools().dir_mdts(str(fs.mount / "mdt0"), str(fs.mount / "mdt0" / "ost2")) == [0, 0]
    assert files_in(fs.mount / "mdt0") == []


def test_directory_on_the_wrong_mdt_is_an_error(lustre_standin) -> None:
    fs = lustre_standin(osts=2, mdt_count=2)
    fs.tools().mkdir_on_mdt(str(fs.mount / "mdt1"), 0)  # named for MDT 1, made on MDT 0
    outcome = run(lustre_task(fs, mdt=1, ost=0), fs)
    assert outcome.payload["check"] == "error"
    directory = fs.mount / "mdt1"
    assert outcome.error.startswith(f"directory {directory} is on MDT 0, not MDT 1; move it with")
    assert files_in(directory) == []


def test_hex_ost_names(lustre_standin) -> None:
    fs = lustre_standin(osts=[0, 10, 11])
    outcome = run(lustre_task(fs, ost=10), fs)
    assert outcome.status is Status.OK, outcome.error
    assert outcome.payload["ost"] == "OST000a"
    assert metrics_of(outcome)["cyclone_lustre_file_creation_check"][1]["ost_index"] == "10"


def test_object_placed_elsewhere_fails(lustre_standin) -> None:
    fs = lustre_standin(osts=4, place_on={2: 3})
    outcome = run(lustre_task(fs, ost=2), fs)
    assert outcome.status is Status.FAILED
    assert outcome.payload["check"] == "failed"
    assert outcome.payload["placed_ost_index"] == 3
    assert "asked for on OST0002 (index 2) was placed on OST0003 (index 3)" in outcome.error
    metrics = metrics_of(outcome)
    assert metrics["cyclone_lustre_file_creation_check"] == (0.0, LABELS)
    assert metrics["cyclone_lustre_file_creation_error"] == (0.0, LABELS)
    assert metrics["cyclone_lustre_file_creation_seconds"][1]["check"] == "failed"
    assert files_in(fs.mount / "mdt0") == []


def test_inactive_ost_is_reported_not_checked(lustre_standin) -> None:
    fs = lustre_standin(osts=4, inactive=[1])
    outcome = run(lustre_task(fs, ost=1, ost_active=False), fs)
    assert outcome.status is Status.FAILED
    assert outcome.error == "OST0001 is inactive; file creation not checked"
    assert outcome.payload["check"] == "inactive"
    # Not a failed check and not an error: the error flag at 0, and when it was looked at.
    metrics = metrics_of(outcome)
    assert set(metrics) == {"cyclone_lustre_file_creation_error", "cyclone_lustre_file_creation_timestamp_seconds"}
    assert metrics["cyclone_lustre_file_creation_error"] == (0.0, {**LABELS, "ost_index": "1"})
    assert files_in(fs.mount / "mdt0") == []


def test_tool_failure_is_an_error_with_its_stderr(lustre_standin) -> None:
    fs = lustre_standin(osts=4, mdt_count=2)
    task = lustre_task(fs, mdt=3, ost=2)  # the file system has no MDT 3: lfs mkdir -i 3 fails
    (fs.mount / "mdt3").rmdir()
    outcome = run(task, fs)
    assert outcome.status is Status.FAILED
    assert outcome.payload["check"] == "error"
    assert outcome.error == (
        f"{fs.lfs_bin} mkdir -i 3 {fs.mount}/mdt3 exited with status 22: "
        f"lfs setdirstripe: cannot create dir '{fs.mount}/mdt3': Invalid argument"
    )
    labels = {**LABELS, "mdt_index": "3"}
    assert metrics_of(outcome)["cyclone_lustre_file_creation_error"] == (1.0, labels)
    assert not (fs.mount / "mdt3").exists()


def test_missing_lfs_is_an_error(lustre_standin) -> None:
    fs = lustre_standin(osts=4)
    task = FileCreateTask(path=str(fs.mount), mode="lustre", fsname="testfs", mdt_index=0, ost_index=0)
    outcome = run(task, fs, lfs="/nonexistent/lfs")
    assert outcome.payload["check"] == "error"
    assert "/nonexistent/lfs" in outcome.error


def test_hanging_ost_times_out_and_lfs_is_killed(lustre_standin) -> None:
    fs = lustre_standin(osts=4, hang=[3])
    task = lustre_task(fs, ost=3, timeout_ms=1500)
    outcomes: list[Outcome] = []
    worker = threading.Thread(target=lambda: outcomes.append(run(task, fs)), daemon=True)
    worker.start()
    worker.join(1.5 + 2.0)  # timeout_ms plus slack: the task must have reported by then
    assert outcomes, "the check did not report within timeout_ms"
    [outcome] = outcomes
    assert outcome.status is Status.FAILED
    assert outcome.payload["check"] == "timeout"
    assert outcome.error.startswith("check did not finish within 1500 ms")
    # The object is created on the dead OST when the stand-in first looks at the file.
    assert f"lfs getstripe -y {fs.mount}/mdt0/ost3/" in outcome.error
    assert metrics_of(outcome)["cyclone_lustre_file_creation_error"] == (1.0, {**LABELS, "ost_index": "3"})
    assert wait_until(lambda: not lfs_processes(fs)), "the hung lfs was not killed"
    assert wait_until(lambda: files_in(fs.mount / "mdt0") == [])


def test_missing_mdt_directory_is_reported(lustre_standin) -> None:
    fs = lustre_standin(osts=2, mdt_count=4)
    task = lustre_task(fs, mdt=3, create_dirs=False)
    (fs.mount / "mdt3").rmdir()
    outcome = run(task, fs)
    assert outcome.payload["check"] == "error"
    directory = fs.mount / "mdt3"
    assert outcome.error == (
        f'directory {directory} does not exist; create it with "lfs mkdir -i 3 {directory}" or set create_dirs'
    )
    assert not directory.exists()


def test_missing_mdt_directory_is_created_on_its_mdt(lustre_standin) -> None:
    fs = lustre_standin(osts=2, mdt_count=4)
    task = lustre_task(fs, mdt=3, ost=1)
    (fs.mount / "mdt3").rmdir()
    outcome = run(task, fs)
    assert outcome.status is Status.OK, outcome.error
    assert fs.tools().lfs("getdirstripe", "-m", str(fs.mount / "mdt3")).strip() == "3"


def test_concurrent_checks_create_the_mdt_directory_once(lustre_standin) -> None:
    fs = lustre_standin(osts=4, mdt_count=2)
    tasks = [lustre_task(fs, mdt=1, ost=ost) for ost in range(4)]
    (fs.mount / "mdt1").rmdir()
    outcomes: list[Outcome] = []
    workers = [threading.Thread(target=lambda t=t: outcomes.append(run(t, fs))) for t in tasks]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert sorted(outcome.payload["check"] for outcome in outcomes) == ["ok"] * 4, [o.error for o in outcomes]


# -- the generator ---------------------------------------------------------------------------


def generator(fs, **options) -> FileCreateGenerator:
    options = {"path": str(fs.mount), "lfs_bin": fs.lfs_bin, "lctl_bin": fs.lctl_bin, "mode": "lustre", **options}
    return structure(options, FileCreateGenerator, where="generator 'file-create'")


def test_round_over_mdts_and_osts(lustre_standin, drive) -> None:
    fs = lustre_standin(osts=3, mdt_count=2, inactive=[1], place_on={2: 0})
    driver = drive(generator(fs, rounds=1))
    assert driver.pull() is True
    assert driver.keys == ["mdt0-ost0", "mdt0-ost1", "mdt0-ost2", "mdt1-ost0", "mdt1-ost1", "mdt1-ost2"]
    checks = {result.key: result.payload["check"] for result in driver.results}
    assert checks == {
        "mdt0-ost0": "ok",
        "mdt0-ost1": "inactive",
        "mdt0-ost2": "failed",
        "mdt1-ost0": "ok",
        "mdt1-ost1": "inactive",
        "mdt1-ost2": "failed",
    }
    assert all(result.payload["target"] == "testfs" for result in driver.results)
    for mdt in (0, 1):  # created on their MDTs, one directory per OST, and left empty
        assert fs.tools().lfs("getdirstripe", "-m", str(fs.mount / f"mdt{mdt}")).strip() == str(mdt)
        assert sorted(p.name for p in (fs.mount / f"mdt{mdt}").iterdir()) == ["ost0", "ost2"]
        assert files_in(fs.mount / f"mdt{mdt}") == []


def test_selection_of_osts_and_mdts(lustre_standin, drive) -> None:
    fs = lustre_standin(osts=12, mdt_count=3)
    driver = drive(generator(fs, rounds=1, osts="1,10-11", mdts="2", mdt_dir_prefix="m"))
    assert driver.pull() is True
    assert driver.keys == ["mdt2-ost1", "mdt2-ost10", "mdt2-ost11"]
    assert all(result.ok for result in driver.results), [result.error for result in driver.results]
    assert (fs.mount / "m2").is_dir()


def test_unknown_ost_in_selection_is_one_line(lustre_standin, drive) -> None:
    fs = lustre_standin(osts=4)
    driver = drive(generator(fs, rounds=1, osts="2-5"))
    with pytest.raises(CycloneError) as caught:
        driver.pull()
    message = str(caught.value)  # worded by cyclone-lustre-ost's OST selection
    assert message.startswith("osts: ")
    assert "4-5" in message
    assert "0-3" in message


def test_unknown_mdt_in_selection_is_one_line(lustre_standin, drive) -> None:
    fs = lustre_standin(osts=4, mdt_count=2)
    driver = drive(generator(fs, rounds=1, mdts="1-3"))
    with pytest.raises(CycloneError) as caught:
        driver.pull()
    assert str(caught.value) == "mdts: no MDT 2-3 in file system 'testfs' (its MDTs are 0-1)"


def test_auto_mode_finds_lustre(lustre_standin, drive) -> None:
    fs = lustre_standin(osts=2)
    driver = drive(generator(fs, rounds=1, mode="auto"))
    assert driver.pull() is True
    assert driver.keys == ["mdt0-ost0", "mdt0-ost1"]
    assert all(result.ok for result in driver.results)


def test_auto_mode_elsewhere_is_plain(lustre_standin, drive, tmp_path) -> None:
    fs = lustre_standin(osts=2)
    elsewhere = tmp_path / "scratch"
    elsewhere.mkdir()
    driver = drive(generator(fs, rounds=1, mode="auto", path=str(elsewhere)))
    assert driver.pull() is True
    assert driver.keys == ["plain"]
    assert driver.results[0].ok


def test_inactive_ost_found_again_each_round(lustre_standin, drive) -> None:
    fs = lustre_standin(osts=2)
    gen = generator(fs, rounds=2, interval=0)
    driver = drive(gen)
    assert driver.pull(until=lambda: len(driver.results) == 2) is False
    fs.set_ost(1, active=False)
    assert driver.pull() is True
    assert [result.payload["check"] for result in driver.results] == ["ok", "ok", "ok", "inactive"]


def test_hung_check_is_not_handed_out_twice(lustre_standin, drive) -> None:
    fs = lustre_standin(osts=2)
    driver = drive(generator(fs, rounds=3, interval=0))
    # ost1's check never settles (its worker hangs); ost0's settles every round.
    hung = []

    def settle_all_but_ost1() -> bool:
        while len(driver.handed_out) > len(driver.results) + len(hung):
            spec = driver.handed_out[len(driver.results) + len(hung)][1]
            if spec.key == "mdt0-ost1":
                hung.append(spec)
            else:
                driver.settle(spec)
        return False

    assert driver.pull(settle=False, until=settle_all_but_ost1) is True
    assert driver.keys.count("mdt0-ost1") == 1
    assert driver.keys.count("mdt0-ost0") == 3


def test_later_examination_failure_reuses_the_plan(lustre_standin, drive, caplog) -> None:
    fs = lustre_standin(osts=2)
    gen = generator(fs, rounds=2, interval=0)
    driver = drive(gen)
    assert driver.pull(until=lambda: len(driver.results) == 2) is False
    gen.lfs_bin = "/nonexistent/lfs"  # the next examination fails
    assert driver.pull() is True
    assert driver.keys == ["mdt0-ost0", "mdt0-ost1"] * 2
    assert "checking the targets of the previous round again" in caplog.text
    assert [result.payload["check"] for result in driver.results[2:]] == ["error", "error"]


# -- what the controller decides ---------------------------------------------------------------


def test_a_check_outside_the_controllers_roots_is_an_error_and_touches_nothing(lustre_standin, tmp_path) -> None:
    fs = lustre_standin(osts=2)
    task = lustre_task(fs, ost=1)
    (fs.mount / "mdt0").rmdir()
    outcome = run(task, fs, roots=(str(tmp_path / "elsewhere"),))
    assert outcome.status is Status.FAILED
    assert outcome.payload["check"] == "error"
    assert outcome.error == (
        f"{fs.mount}: refused: outside this controller's roots {tmp_path / 'elsewhere'} (controller.local.lustre.roots)"
    )
    assert metrics_of(outcome)["cyclone_lustre_file_creation_error"][0] == 1.0
    assert list(fs.mount.iterdir()) == []


def test_a_master_that_sends_a_task_naming_an_executable_gets_it_refused(lustre_standin, tmp_path) -> None:
    fs = lustre_standin(osts=2)
    evil = tmp_path / "evil"
    evil.write_text(f"#!/bin/sh\ntouch {tmp_path / 'evil-ran'}\n")
    evil.chmod(0o755)
    args = {"path": str(fs.mount), "mode": "lustre", "fsname": fs.fsname, "mdt_index": 0, "ost_index": 1}
    for field, value in (("lfs_bin", str(evil)), ("lctl_bin", str(evil)), ("sudo", True)):
        result = run_dispatched("file-create", {**args, field: value}, local=fs.local())
        assert result.status is Status.FAILED
        assert result.error.startswith("arguments of task type 'file-create': ")
        assert field in result.error
    assert not (tmp_path / "evil-ran").exists()
    assert list(fs.mount.iterdir()) == []
    assert run_dispatched("file-create", args, local=fs.local()).status is Status.OK
