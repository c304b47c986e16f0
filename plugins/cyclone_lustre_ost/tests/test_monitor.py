"""The lustre-ost-io generator: rounds, one probe per OST at a time, discovery, options."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cyclone_lustre_ost.monitor import LustreOstIoGenerator

from cyclone_core import ConfigError, CycloneError, Status, structure

WHERE = "generator 'lustre-ost-io'"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def generator(fs, **options) -> tuple[LustreOstIoGenerator, Clock]:
    options.setdefault("total_size", "1M")
    gen = structure(
        {"path": str(fs.mount), "lfs_bin": fs.lfs_bin, "interval": 60, **options}, LustreOstIoGenerator, where=WHERE
    )
    clock = Clock()
    gen.clock = clock
    return gen, clock


def take(tasks, count: int) -> list:
    return [next(tasks) for _ in range(count)]


def test_a_round_covers_every_selected_ost_and_waits_for_the_next(lustre_standin, settle) -> None:
    fs = lustre_standin(osts=[0, 1, 2, 10, 20], inactive=[2])
    gen, clock = generator(fs, osts="1,2,10")
    tasks = gen.tasks()
    specs = take(tasks, 3)
    assert [(s.key, s.task.ost, s.task.active) for s in specs] == [
        ("OST0001/r1", 1, True),
        ("OST0002/r1", 2, False),
        ("OST000a/r1", 10, True),
    ]
    assert all(s.timeout == 300 and s.task.fsname == "testfs" for s in specs)
    assert next(tasks) is None  # never blocks: nothing to do until the next round
    results = {s.task.ost: settle(gen, s) for s in specs}
    assert results[1].status is Status.OK
    assert results[10].status is Status.OK
    assert (results[2].status, results[2].error) == (Status.FAILED, "OST0002 is inactive")
    assert gen.in_flight() == set()
    clock.now += 59.9
    assert next(tasks) is None
    clock.now += 0.1
    assert [s.key for s in take(tasks, 3)] == ["OST0001/r2", "OST0002/r2", "OST000a/r2"]
    assert gen.round == 2


def test_an_ost_with_a_probe_outstanding_is_not_probed_twice(lustre_standin, settle) -> None:
    fs = lustre_standin(osts=3)
    gen, clock = generator(fs)
    tasks = gen.tasks()
    first = take(tasks, 3)
    settle(gen, first[0])
    settle(gen, first[2])
    assert gen.in_flight() == {"OST0001"}
    clock.now += 60
    second = take(tasks, 2)
    assert [s.key for s in second] == ["OST0000/r2", "OST0002/r2"]  # OST0001's probe counts for round 2
    assert next(tasks) is None
    for spec in (first[1], *second):
        settle(gen, spec)
    clock.now += 60
    assert [s.key for s in take(tasks, 3)] == ["OST0000/r3", "OST0001/r3", "OST0002/r3"]


def test_probes_not_handed_out_are_replaced_by_the_new_round(lustre_standin, caplog) -> None:
    fs = lustre_standin(osts=4)
    gen, clock = generator(fs)
    tasks = gen.tasks()
    assert [s.key for s in take(tasks, 1)] == ["OST0000/r1"]
    clock.now += 60  # the master was slow to pull: three probes of round 1 were still pending
    with caplog.at_level(logging.INFO, logger="cyclone.lustre_ost"):
        keys = [s.key for s in take(tasks, 3)]
    assert keys == ["OST0001/r2", "OST0002/r2", "OST0003/r2"]  # OST0000 is still in flight
    assert "round 2: dropping 3 probe(s) of the previous round" in caplog.text
    assert next(tasks) is None


def test_one_shot_and_plain_mode(tmp_path: Path, settle) -> None:
    target = tmp_path / "data"
    target.mkdir()
    gen = structure({"path": str(target), "rounds": 1, "total_size": "1M"}, LustreOstIoGenerator, where=WHERE)
    specs = list(gen.tasks())  # returns after the single round: no endless loop
    assert [s.key for s in specs] == ["dir/r1"]
    result = settle(gen, specs[0])
    assert result.status is Status.OK, result.error
    assert {m.labels["fs"] for m in result.metrics} == {str(target)}
    assert "cyclone_lustre_ost_write_bytes_per_second" in {m.name for m in result.metrics}


def test_administrative_states_and_placement(lustre_standin, settle) -> None:
    fs = lustre_standin(osts=[0, 1, 2, 3, 4], inactive=[3], flags={4: "N"}, drained=[1], check_error={2: 110})
    gen, _ = generator(fs, discovery="check", drained="1", retired="3")
    specs = {s.task.ost: s for s in take(gen.tasks(), 5)}
    assert {i: s.task.admin_state for i, s in specs.items()} == {0: "", 1: "drained", 2: "", 3: "retired", 4: ""}
    assert specs[0].task.strict_placement  # lfs --version said 2.15: "-o" is strict
    assert (specs[2].task.active, specs[2].task.inactive_reason) == (False, "Connection timed out (110)")
    results = {i: settle(gen, spec) for i, spec in specs.items()}
    assert {i: (r.status, r.payload["state"]) for i, r in results.items()} == {
        0: (Status.OK, "ok"),
        1: (Status.OK, "drained"),
        2: (Status.FAILED, "inactive"),
        3: (Status.OK, "retired"),
        4: (Status.OK, "ok"),  # N is shown by lfs df only; with discovery "check" it is not seen
    }
    assert results[2].error == "OST0002 is inactive: Connection timed out (110)"
    by_df, _ = generator(fs, discovery="df", lustre_version="2.12")
    df_specs = {s.task.ost: s.task for s in take(by_df.tasks(), 5)}
    assert df_specs[4].admin_state == "drained"  # lfs df flags it N (no precreate)
    assert not df_specs[0].strict_placement


def test_several_rounds_then_stop(lustre_standin, settle) -> None:
    fs = lustre_standin(osts=2)
    gen, clock = generator(fs, rounds=2)
    tasks = gen.tasks()
    for spec in take(tasks, 2):
        settle(gen, spec)
    assert next(tasks) is None
    clock.now += 120  # late: the next round starts now, no catch-up burst
    for spec in take(tasks, 2):
        settle(gen, spec)
    with pytest.raises(StopIteration):
        next(tasks)


def test_unknown_index_is_a_clear_error(lustre_standin) -> None:
    fs = lustre_standin(osts=[0, 1, 2, 10])
    gen, _ = generator(fs, osts="2-3,10")
    with pytest.raises(
        CycloneError,
        match=r"^generator 'lustre-ost-io': osts: no OST 3 in file system 'testfs' \(its OSTs are 0-2,10\)$",
    ):
        next(gen.tasks())


def test_discovery_failure_stops_the_first_round_and_skips_later_ones(lustre_standin, settle, caplog) -> None:
    fs = lustre_standin(osts=2)
    gen, clock = generator(fs, discovery="df", timeout=1)
    tasks = gen.tasks()
    for spec in take(tasks, 2):
        settle(gen, spec)
    fs.set_ost(1, hang=True)
    clock.now += 60
    with caplog.at_level(logging.WARNING, logger="cyclone.lustre_ost"):
        assert next(tasks) is None
    assert "round 2 skipped: OST discovery failed" in caplog.text
    assert "timed out after 1 s" in caplog.text
    fs.set_ost(1, hang=False)
    clock.now += 60
    assert [s.key for s in take(tasks, 2)] == ["OST0000/r3", "OST0001/r3"]

    broken, _ = generator(fs, lfs_bin=str(fs.mount / "missing-lfs"), mode="lustre")
    with pytest.raises(CycloneError, match=r"generator 'lustre-ost-io': .*cannot run"):
        next(broken.tasks())


def test_auto_mode_detects_the_standin_as_lustre(lustre_standin) -> None:
    fs = lustre_standin(osts=1)
    gen, _ = generator(fs)
    spec = next(gen.tasks())
    assert spec.task.ost == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "path: required but missing"),
        ({"path": "/x", "osts": "0-"}, "osts: '0-' is not a RangeSet"),
        ({"path": "/x", "interval": 0}, "interval must be positive, got 0.0"),
        ({"path": "/x", "mode": "nfs"}, "mode must be one of auto, lustre, plain; got 'nfs'"),
        ({"path": "/x", "discovery": "ls"}, "discovery must be one of osts, df, lctl, check"),
        ({"path": "/x", "block_size": "1X"}, "block_size: unknown size unit"),
        ({"path": "/x", "rounds": "once"}, "rounds: expected a whole number"),
        ({"path": "/x", "slow_threshold": -1}, "slow_threshold must be positive, got -1.0"),
        ({"path": "/x", "color": "red"}, "extra fields found"),
        ({"path": "/x", "drained": "a"}, "drained: 'a' is not a RangeSet"),
        ({"path": "/x", "lustre_version": "new"}, "lustre_version must be 'auto' or a Lustre release such as 2.15"),
    ],
)
def test_bad_options_are_one_line(options: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        structure(options, LustreOstIoGenerator, where=WHERE)
    assert str(error.value).startswith(WHERE)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_legacy_config(tmp_path: Path) -> None:
    task_file = tmp_path / "tasks.xml"
    task_file.write_text(
        """<tasks>
  <task name="ost_perf">
    <class module="task.lustre_alert_io_task" name="LustreAlertIOTask"/>
    <property>
      <mail_server>smtp.example.org</mail_server><mail_sender>a@b</mail_sender>
      <mail_receiver>c@d</mail_receiver><mail_threshold>30</mail_threshold>
      <ost_idx></ost_idx><block_size_bytes>4194304</block_size_bytes>
      <total_size_bytes>1073741824</total_size_bytes><write_file_sync>off</write_file_sync>
      <target_dir>/lustre/hebe/perf</target_dir><lfs_bin>/usr/bin/lfs</lfs_bin>
      <lfs_target>hebe</lfs_target><db_proxy_target>db</db_proxy_target><db_proxy_port>5777</db_proxy_port>
    </property>
  </task>
</tasks>"""
    )
    sections = {
        "control": {"local_mode": "off", "measure_interval": "120"},
        "task": {"task_file": str(task_file), "task_name": "ost_perf"},
        "lustre": {"lfs_bin": "/usr/bin/lfs", "target": "hebe", "ost_select_list": "0-11,20"},
    }
    options = LustreOstIoGenerator.legacy_options(sections)
    gen = structure(options, LustreOstIoGenerator, where=WHERE)
    assert (gen.path, gen.interval, gen.osts, gen.lfs_bin) == ("/lustre/hebe/perf", 120.0, "0-11,20", "/usr/bin/lfs")
    assert (gen.block_size, gen.total_size, gen.fsync, gen.slow_threshold) == (4 << 20, 1 << 30, False, 30.0)
    assert (gen.mode, gen.discovery, gen.sudo) == ("lustre", "osts", False)
    with pytest.raises(ValueError, match="no task named 'other'"):
        LustreOstIoGenerator.legacy_options({"task": {"task_file": str(task_file), "task_name": "other"}})
