"""OST migration: the planner's state machine, the task's outcomes, the generator end to end."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cyclone_lustre_ost.lustre import Ost
from cyclone_lustre_ost.migrate import (
    LustreOstMigrateGenerator,
    LustreOstMigrateTask,
    MigrationEntry,
    MigrationPlanner,
    read_input,
)

from cyclone_core import ConfigError, CycloneError, Status, TaskContext, structure

WHERE = "generator 'lustre-ost-migrate'"


def osts(**fills: float) -> list[Ost]:
    """``osts(o0=90, o1=10)`` -> OSTs 0 and 1 at those fill levels (percent)."""
    return [
        Ost(
            index=int(k[1:]),
            name=f"fs-OST{int(k[1:]):04x}",
            active=True,
            used_kb=int(v * 100),
            available_kb=int((100 - v) * 100),
        )
        for k, v in fills.items()
    ]


def entries(source: int, *names: str) -> list[MigrationEntry]:
    return [MigrationEntry(path=f"/fs/{name}", source=source) for name in names]


# -- the planner ------------------------------------------------------------------------------


def test_thresholds_decide_sources_and_targets() -> None:
    planner = MigrationPlanner(source_threshold=80, target_threshold=50)
    planner.update([*osts(o0=85, o1=79, o2=49.9, o3=50), Ost(index=4, name="fs-OST0004", active=False)])
    planner.add(entries(1, "below-threshold"))
    assert planner.next() is None  # OST1 is not full enough to give anything up
    planner.add(entries(0, "a"))
    entry, target = planner.next()
    assert (entry.path, target) == ("/fs/a", 2)  # OST3 is at the threshold, OST4 inactive
    assert [planner.source_ready(i) for i in range(5)] == [False, False, False, False, False]
    assert planner.target_ready(3) is False


def test_fifo_per_source_and_release() -> None:
    planner = MigrationPlanner(source_threshold=0, target_threshold=60)
    planner.update(osts(o0=90, o1=10))
    planner.add(entries(0, "first", "second", "third"))
    order = []
    for _ in range(3):
        entry, target = planner.next()
        assert planner.next() is None  # max_per_ost = 1: OST0 and OST1 are both occupied
        order.append(entry.path)
        planner.release(entry.source, target)
    assert order == ["/fs/first", "/fs/second", "/fs/third"]  # 2.x popped the newest first
    assert planner.busy == {}


def test_max_per_ost_and_round_robin() -> None:
    planner = MigrationPlanner(source_threshold=50, target_threshold=50, max_per_ost=2)
    planner.update(osts(o0=90, o1=95, o2=10, o3=20))
    planner.add(entries(0, "a0", "b0", "c0"))
    planner.add(entries(1, "a1", "b1"))
    picks = []
    while (pick := planner.next()) is not None:
        picks.append((pick[0].path, pick[1]))
    # sources alternate, targets alternate, and no OST takes part in more than two at once
    assert picks == [("/fs/a0", 2), ("/fs/a1", 3), ("/fs/b0", 2), ("/fs/b1", 3)]
    assert max(planner.busy.values()) == 2
    assert planner.waiting() == 1
    planner.release(0, 2)
    assert planner.next()[0].path == "/fs/c0"


def test_targets_rangeset_limits_the_choice() -> None:
    planner = MigrationPlanner(source_threshold=0, target_threshold=90, targets=[3])
    planner.update(osts(o0=50, o1=1, o3=80))
    planner.add(entries(0, "x"))
    assert planner.next()[1] == 3


# -- input files ----------------------------------------------------------------------------


def test_input_lines_are_checked(tmp_path: Path, caplog) -> None:
    listing = tmp_path / "a.input"
    listing.write_text(
        "# files on the full OSTs\n"
        "3 /lustre/fs/dir/file one\n"
        "\n"
        "x /lustre/fs/bad-index\n"
        "4\n"
        "5 relative/path\n"
        "6 /elsewhere/file\n"
        "9 /lustre/fs/unknown-ost\n"
        "10 /lustre/fs/dir/../other\n"
    )
    with caplog.at_level(logging.WARNING, logger="cyclone.lustre_ost"):
        found = read_input(listing, "/lustre/fs", known=[3, 4, 5, 6, 10])
    assert found == [
        MigrationEntry("/lustre/fs/dir/file one", 3, f"{listing}:2"),
        MigrationEntry("/lustre/fs/other", 10, f"{listing}:9"),
    ]
    for line in (4, 5, 6, 7, 8):
        assert f"{listing}:{line}: " in caplog.text
    assert "no OST 9 in the file system (its OSTs are 3-6,10)" in caplog.text


# -- the task ---------------------------------------------------------------------------------


def migrate(fs, file: Path, source: int, target: int, **options):
    task = LustreOstMigrateTask(
        file=str(file), source=source, target=target, fsname=fs.fsname, tool_timeout=10, **options
    )
    return task.execute(TaskContext(task_id="t1", local=fs.settings()))


def test_every_outcome(lustre_standin) -> None:
    busy = "cannot swap layouts: Device or resource busy"
    fs = lustre_standin(osts=[0, 1, 2, 3, 4], inactive=[3], migrate_error={1: busy})
    tools, mount = fs.tools(), fs.mount
    for name, ost, count in (("a", 0, 1), ("b", 0, 1), ("c", 1, 1), ("d", 0, 2), ("e", 0, 1), ("f", 0, 1)):
        tools.setstripe(str(mount / name), ost, count)
        (mount / name).write_bytes(b"x" * 1000)

    done = migrate(fs, mount / "a", 0, 2)
    assert (done.status, done.payload["outcome"]) == (Status.OK, "success")
    assert fs.layout(mount / "a") == [2]
    assert {m.name: m.value for m in done.metrics}["cyclone_lustre_ost_migrate_bytes"] == 1000
    assert done.metrics[0].name == "cyclone_lustre_ost_migrate_seconds"
    assert done.metrics[0].labels == {
        "fs": "testfs",
        "component": "ost",
        "target": "testfs-OST0000",  # the OST the file leaves, as the exporters name it
        "destination": "testfs-OST0002",
        "outcome": "success",
    }

    displaced = migrate(fs, mount / "b", 0, 3)  # inactive target: the allocator moves on
    assert (displaced.status, displaced.payload["outcome"]) == (Status.OK, "displaced")
    assert displaced.payload["detail"] == "migrated to OST0004, not OST0003"

    ignored = migrate(fs, mount / "c", 0, 2)
    assert (ignored.payload["outcome"], ignored.payload["detail"]) == ("ignored", "not on OST0000 (on OST0001)")
    already = migrate(fs, mount / "a", 0, 2)
    assert (already.payload["outcome"], already.payload["detail"]) == ("ignored", "already on OST0002")

    skipped = migrate(fs, mount / "d", 0, 2)
    assert (skipped.status, skipped.payload["outcome"]) == (Status.OK, "skipped")
    assert skipped.payload["detail"] == "striped over OST0000,OST0001"
    striped = migrate(fs, mount / "d", 0, 2, skip_striped=False)
    assert striped.payload["outcome"] == "success"
    assert fs.layout(mount / "d") == [2, 4]  # two stripes again, skipping the inactive OST3

    failed = migrate(fs, mount / "e", 0, 1, block=False, direct_io=False)
    assert (failed.status, failed.payload["outcome"]) == (Status.FAILED, "failed")
    assert busy in failed.error
    assert "--non-block --non-direct" in failed.error
    assert fs.layout(mount / "e") == [0]

    gone = migrate(fs, mount / "missing", 0, 2)
    assert (gone.status, gone.payload["outcome"]) == (Status.FAILED, "failed")
    assert "No such file or directory" in gone.error


def test_data_on_mdt_is_never_flattened(lustre_standin) -> None:
    fs = lustre_standin(osts=3)
    tools, mount = fs.tools(), fs.mount
    tools.lfs("setstripe", "-E", "1M", "-L", "mdt", str(mount / "dom"))
    tools.lfs("setstripe", "-E", "1M", "-L", "mdt", "-E", "-1", "-c", "1", "-i", "0", str(mount / "dom-pfl"))
    assert fs.tools().getstripe(str(mount / "dom")).osts == ()
    for name, on in (("dom", "the MDT (Data-on-MDT)"), ("dom-pfl", "the MDT (Data-on-MDT)")):
        before = tools.lfs("getstripe", "-y", str(mount / name))
        outcome = migrate(fs, mount / name, 0, 2, skip_striped=False)
        assert (outcome.status, outcome.payload["outcome"]) == (Status.OK, "skipped")
        assert outcome.payload["detail"] == f"Data-on-MDT layout ({on}) is never flattened by a migration"
        assert tools.lfs("getstripe", "-y", str(mount / name)) == before  # untouched
    assert "OST0000" not in migrate(fs, mount / "dom", 0, 2).payload["detail"]  # on no OST at all


def test_composite_layout_objects_per_component(lustre_standin) -> None:
    fs = lustre_standin(osts=3)
    tools, mount = fs.tools(), fs.mount
    # PFL: only the first component is instantiated at create; the second has no objects yet.
    tools.lfs("setstripe", "-E", "4M", "-c", "1", "-i", "1", "-E", "-1", "-c", "2", str(mount / "pfl"))
    layout = tools.getstripe(str(mount / "pfl"))
    assert [(c.instantiated, c.objects) for c in layout.components] == [(True, (1,)), (False, ())]
    skipped = migrate(fs, mount / "pfl", 1, 2)
    assert (skipped.payload["outcome"], skipped.payload["detail"]) == ("skipped", "composite layout on OST0001")
    moved = migrate(fs, mount / "pfl", 1, 2, skip_striped=False)
    assert moved.payload["outcome"] == "success"
    assert fs.layout(mount / "pfl") == [2]


# -- the generator ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_generator(fs, inbox: Path, **options) -> tuple[LustreOstMigrateGenerator, Clock]:
    data = {"path": str(fs.mount), "input_dir": str(inbox), "lfs_bin": fs.lfs_bin, **options}
    gen = structure(data, LustreOstMigrateGenerator, where=WHERE)
    clock = Clock()
    gen.clock = clock
    return gen, clock


def files_on(fs, ost: int, *names: str) -> list[str]:
    paths = []
    for name in names:
        fs.tools().setstripe(str(fs.mount / name), ost)
        paths.append(str(fs.mount / name))
    return paths


def test_generator_drains_full_osts(lustre_standin, tmp_path: Path, settle, caplog) -> None:
    size = 1_000_000
    fs = lustre_standin(osts=4, size_kb=size, used_kb={0: 900_000, 1: 950_000, 2: 100_000, 3: 700_000})
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    on0 = files_on(fs, 0, "a", "b")
    on1 = files_on(fs, 1, "c")
    (inbox / "batch.input").write_text(f"0 {on0[0]}\n0 {on0[1]}\n1 {on1[0]}\nnonsense\n")
    gen, _ = make_generator(fs, inbox, source_threshold=80, target_threshold=60, until_done=True)
    tasks = gen.tasks()
    with caplog.at_level(logging.WARNING, logger="cyclone.lustre_ost"):
        first = next(tasks)
    assert f"{inbox / 'batch.input'}:4: expected '<ost index> <path>'" in caplog.text
    assert not (inbox / "batch.input").exists()
    assert (inbox / "batch.done").exists()
    assert (first.task.file, first.task.source, first.task.target) == (on0[0], 0, 2)
    assert first.key == "OST0000->OST0002#1"
    assert next(tasks) is None  # OST2 is the only target below 60 %, and it is busy
    assert gen.in_flight() == {"OST0000->OST0002#1": (0, 2)}
    assert settle(gen, first).payload["outcome"] == "success"
    second = next(tasks)
    assert (second.task.file, second.task.source) == (on1[0], 1)  # sources take turns
    settle(gen, second)
    third = next(tasks)
    assert third.task.file == on0[1]
    settle(gen, third)
    with pytest.raises(StopIteration):
        next(tasks)
    assert gen.outcomes == {"success": 3}
    assert [fs.layout(p) for p in (*on0, *on1)] == [[2], [2], [2]]


def test_generator_waits_for_fill_levels_and_picks_up_new_files(lustre_standin, tmp_path: Path, settle) -> None:
    fs = lustre_standin(osts=2, size_kb=1000, used_kb={0: 700, 1: 100})
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    gen, clock = make_generator(
        fs, inbox, source_threshold=80, target_threshold=50, refresh_interval=30, scan_interval=5
    )
    tasks = gen.tasks()
    assert next(tasks) is None
    (inbox / "late.input").write_text(f"0 {files_on(fs, 0, 'x')[0]}\n")
    clock.now += 5
    assert next(tasks) is None  # loaded, but OST0 is only 70 % full
    assert gen.planner.waiting() == 1
    fs.set_ost(0, used_kb=850)
    clock.now += 30  # the next lfs df sees it above the source threshold
    spec = next(tasks)
    assert (spec.task.source, spec.task.target) == (0, 1)
    settle(gen, spec)
    assert next(tasks) is None  # a daemon by default: it waits for more input


def test_until_done_gives_up_on_blocked_files(lustre_standin, tmp_path: Path, caplog) -> None:
    fs = lustre_standin(osts=2, size_kb=1000, used_kb={0: 900, 1: 900})
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "x.input").write_text(f"0 {files_on(fs, 0, 'x')[0]}\n")
    gen, _ = make_generator(fs, inbox, target_threshold=50, until_done=True)
    with caplog.at_level(logging.WARNING, logger="cyclone.lustre_ost"):
        assert list(gen.tasks()) == []
    assert "1 file(s) left: no ready source/target pair" in caplog.text


def test_a_failing_statfs_does_not_stop_the_planning(lustre_standin, tmp_path: Path, settle) -> None:
    # OST2's statfs fails with EIO: lfs df prints every row, flags OST2 and exits with 5.
    fs = lustre_standin(osts=4, size_kb=1000, used_kb={0: 900, 1: 100, 3: 100}, statfs_error={2: 5})
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "x.input").write_text(f"0 {files_on(fs, 0, 'x')[0]}\n")
    gen, _ = make_generator(fs, inbox, source_threshold=80, target_threshold=50, targets="1-3", until_done=True)
    spec = next(gen.tasks())
    assert (spec.task.source, spec.task.target) == (0, 1)
    assert 2 not in gen.planner.fill  # not a target while its statfs fails
    assert settle(gen, spec).payload["outcome"] == "success"


def test_generator_errors(lustre_standin, tmp_path: Path) -> None:
    fs = lustre_standin(osts=2)
    gen, _ = make_generator(fs, tmp_path / "missing")
    with pytest.raises(CycloneError, match=r"input_dir .*missing is not a directory"):
        next(gen.tasks())
    (tmp_path / "inbox").mkdir()
    gen, _ = make_generator(fs, tmp_path / "inbox", targets="1-5")
    with pytest.raises(CycloneError, match=r"targets: no OST 2-5 in file system 'testfs' \(its OSTs are 0-1\)"):
        next(gen.tasks())
    for bad, message in (
        ({"source_threshold": 101}, "source_threshold must be between 0 and 100, got 101.0"),
        ({"max_per_ost": 0}, "max_per_ost: must be >= 1, got 0"),
        ({"targets": "x"}, "targets: 'x' is not a RangeSet"),
        ({}, "input_dir: required but missing"),
    ):
        data = {"path": "/x", "input_dir": "/in", **bad}
        if not bad:
            del data["input_dir"]
        with pytest.raises(ConfigError, match=message):
            structure(data, LustreOstMigrateGenerator, where=WHERE)


def test_legacy_config(tmp_path: Path) -> None:
    task_file = tmp_path / "migrate.xml"
    task_file.write_text(
        "<tasks><task name='migrate'><class module='task.lustre_ost_migrate_task' name='LustreOstMigrateTask'/>"
        "<property><filename></filename><source_ost></source_ost><target_ost></target_ost>"
        "<direct_io>off</direct_io><block>on</block><skip>on</skip></property></task></tasks>"
    )
    sections = {
        "control": {"local_mode": "false"},
        "control.threshold": {"update_fill_level": "600", "reload_files": "60", "print_caches": "3600"},
        "task": {"task_file": str(task_file), "task_name": "migrate"},
        "migration": {
            "input_dir": "/var/lib/cyclone/migration",
            "ost_fill_level_threshold_source": "40",
            "ost_fill_level_threshold_target": "30",
            "ost_targets": "100-199",
        },
        "lustre": {"fs_path": "/lustre/hebe"},
    }
    gen = structure(LustreOstMigrateGenerator.legacy_options(sections), LustreOstMigrateGenerator, where=WHERE)
    assert (gen.path, gen.input_dir, gen.targets) == ("/lustre/hebe", "/var/lib/cyclone/migration", "100-199")
    assert (gen.source_threshold, gen.target_threshold, gen.refresh_interval, gen.scan_interval) == (40, 30, 600, 60)
    assert (gen.direct_io, gen.block, gen.skip_striped, gen.sudo) == (False, True, True, True)
    with pytest.raises(ValueError, match="local_mode"):
        LustreOstMigrateGenerator.legacy_options({"control": {"local_mode": "on"}})
