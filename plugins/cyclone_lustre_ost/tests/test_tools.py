"""LustreTools and discovery against the stand-in lfs/lctl (real processes, real files)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cyclone_lustre_ost.discovery import (
    FileSystem,
    discover,
    format_indexes,
    lustre_mount_of,
    parse_rangeset,
    resolve_mode,
    select,
)
from cyclone_lustre_ost.lustre import LustreError, LustreTools, Ost, parse_lfs_df, setstripe_reason
from cyclone_lustre_ost.testing import standin_lustre

from cyclone_core import CycloneError

FIXTURES = Path(__file__).parent / "fixtures"


def test_df_lists_inactive_devices_and_flags(lustre_standin) -> None:
    fs = lustre_standin(osts=[0, 1, 2, 10], inactive=[2], flags={1: "D", 10: "Sf"}, used_kb={0: 524288})
    osts = {o.index: o for o in fs.tools().df(str(fs.mount))}
    assert osts[2] == Ost(index=2, name="testfs-OST0002", active=False)
    assert (osts[1].flags, osts[10].flags) == ("D", "Sf")
    assert osts[0].fill_percent == pytest.approx(50.0)
    assert osts[10].name == "testfs-OST000a"


def test_standin_prints_the_real_layout(lustre_standin) -> None:
    fs = lustre_standin(osts=[0, 3], inactive=[3], flags={0: "f"})
    plain = fs.tools().lfs("df", str(fs.mount)).splitlines()
    verbose = fs.tools().lfs("df", "-v", str(fs.mount)).splitlines()
    real_header = (FIXTURES / "lfs_df_exacloud.txt").read_text().splitlines()[0]
    assert plain[0] == real_header
    assert not any("OST0003" in line for line in plain)  # deactivated targets need -v
    assert "OST0003             : inactive device" in verbose
    assert plain[2].endswith(f"{fs.mount}[OST:0]")  # lowercase flags only with -v
    assert verbose[2].endswith(f"{fs.mount}[OST:0] f")
    assert plain[-2].startswith("filesystem_summary:")
    assert fs.tools().lfs("osts", str(fs.mount)).splitlines() == [
        "OBDS:",
        "0: testfs-OST0000_UUID ACTIVE",
        "3: testfs-OST0003_UUID INACTIVE",
    ]


def test_discovery_sources_agree(lustre_standin) -> None:
    fs = lustre_standin(osts=[0, 1, 10, 11], inactive=[10])
    tools = fs.tools()
    states = {}
    for source in ("osts", "df", "lctl", "check"):
        found = discover(tools, str(fs.mount), source)
        assert found.fsname == "testfs"
        states[source] = [(o.index, o.name, o.active) for o in found.osts]
    assert len({tuple(v) for v in states.values()}) == 1
    assert states["osts"][2] == (10, "testfs-OST000a", False)
    assert [(o.index, o.active) for o in tools.check_osts("testfs")] == [(0, True), (1, True), (10, False), (11, True)]
    assert tools.osc_active("testfs") == {0: True, 1: True, 10: False, 11: True}
    assert [d.status for d in tools.devices() if d.type == "osc"] == ["UP", "UP", "IN", "UP"]
    assert tools.mdt_count(str(fs.mount)) == 1


def test_selection_by_rangeset() -> None:
    fs = FileSystem("testfs", tuple(Ost(index=i, name=f"testfs-OST{i:04x}", active=True) for i in [*range(12), 20]))
    assert [o.index for o in select(fs, "")] == [*range(12), 20]
    assert [o.label for o in select(fs, "9-11,20")] == ["OST0009", "OST000a", "OST000b", "OST0014"]
    with pytest.raises(CycloneError, match=r"no OST 12-13,30 in file system 'testfs' \(its OSTs are 0-11,20\)"):
        select(fs, "10-13,30")
    assert parse_rangeset("003-005") == [3, 4, 5]  # padded input is still decimal
    assert format_indexes([3, 1, 2, 7]) == "1-3,7"
    with pytest.raises(ValueError, match="not a RangeSet"):
        parse_rangeset("1-x")


def test_layout_commands(lustre_standin) -> None:
    fs = lustre_standin(osts=[0, 1, 2, 10], inactive=[2], place_on={1: 0}, mdt_count=2)
    tools, mount = fs.tools(), fs.mount
    tools.setstripe(str(mount / "a"), 10)
    assert (mount / "a").exists()
    assert tools.stripe_index(str(mount / "a")) == 10
    tools.setstripe(str(mount / "b"), 2)  # inactive: the allocator moves on to the next OST
    assert tools.stripe_index(str(mount / "b")) == 10
    tools.setstripe(str(mount / "c"), 1)  # this OST's objects are placed elsewhere
    assert tools.stripe_index(str(mount / "c")) == 0
    tools.migrate(str(mount / "a"), 1, block=False, direct_io=False)
    assert fs.layout(mount / "a") == [0]  # migrating onto OST 1 lands on 0 too
    tools.mkdir_on_mdt(str(mount / "d1"), 1)
    assert tools.lfs("getstripe", "-m", str(mount / "d1")) == "1\n"
    assert tools.lfs("getdirstripe", "-m", str(mount / "d1")) == "1\n"
    (mount / "d1" / "plain").write_text("x")
    assert tools.lfs("getstripe", "-m", str(mount / "d1" / "plain")) == "1\n"
    assert tools.fsname(str(mount / "d1")) == "testfs"


def test_errors_carry_command_status_and_stderr(lustre_standin) -> None:
    fs = lustre_standin(osts=2)
    tools, mount = fs.tools(), fs.mount
    with pytest.raises(LustreError) as missing:
        tools.setstripe(str(mount / "nodir" / "f"), 0)
    message = str(missing.value)
    assert "setstripe -c 1 -i 0" in message
    assert "exited with status 2" in message
    assert f"lfs setstripe: unable to open '{mount}/nodir/f': No such file or directory (2)" in message
    assert "\n" not in message
    assert missing.value.returncode == 2
    with pytest.raises(LustreError, match=r"status 22: lfs setstripe: setstripe error for .*Invalid argument"):
        tools.setstripe(str(mount / "g"), 7)  # no such OST
    tools.setstripe(str(mount / "h"), 0)
    with pytest.raises(LustreError, match="stripe already set"):
        tools.setstripe(str(mount / "h"), 1)
    with pytest.raises(LustreError, match="getstripe failed for"):
        tools.getstripe(str(mount / "nofile"))
    with pytest.raises(LustreError, match="cannot get instance for '/': Inappropriate ioctl for device"):
        tools.fsname("/")
    with pytest.raises(LustreError, match="no OSTs listed"):
        tools.osts("/")  # not Lustre: lfs prints nothing and succeeds, as the real one does
    with pytest.raises(LustreError, match="cannot run"):
        LustreTools(lfs_bin=str(mount / "no-such-lfs")).osts(str(mount))


def test_a_hung_tool_is_killed_at_its_timeout(lustre_standin) -> None:
    fs = lustre_standin(osts=3, hang=[1])
    tools = LustreTools(lfs_bin=fs.lfs_bin, timeout=1.0)
    start = time.monotonic()
    with pytest.raises(LustreError, match=r"lfs df -v .* timed out after 1 s"):
        tools.df(str(fs.mount))
    assert time.monotonic() - start < 8
    assert len(tools.osts(str(fs.mount))) == 3  # lfs osts asks no server: it still works


def test_sudo_prefix(lustre_standin, tmp_path) -> None:
    fs = lustre_standin(osts=1)
    sudo = tmp_path / "bin" / "sudo"
    sudo.parent.mkdir()
    sudo.write_text('#!/bin/sh\n[ "$1" = "-n" ] || exit 99\nshift\nexec "$@"\n')
    sudo.chmod(0o755)
    env_path = f"{sudo.parent}{os.pathsep}{os.environ['PATH']}"
    os.environ["PATH"], saved = env_path, os.environ["PATH"]
    try:
        assert LustreTools(lfs_bin=fs.lfs_bin, sudo=True).fsname(str(fs.mount)) == "testfs"
    finally:
        os.environ["PATH"] = saved


def test_mode_detection(lustre_standin, tmp_path) -> None:
    fs = lustre_standin(osts=1)
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/sda1 / ext4 rw 0 0\n"
        "10.0.0.1@tcp:/lfs /lustre/my\\040fs lustre rw 0 0\n"
        "/dev/sdb /lustre/my\\040fs/x xfs rw 0 0\n"
    )
    assert lustre_mount_of("/lustre/my fs/a/b", str(mounts)) == "/lustre/my fs"
    assert lustre_mount_of("/lustre/my fs/x/y", str(mounts)) is None
    assert lustre_mount_of("/home", str(mounts)) is None
    assert resolve_mode("auto", str(fs.mount), fs.tools()) == "lustre"  # lfs getname works
    assert resolve_mode("auto", str(tmp_path), fs.tools()) == "plain"  # it fails outside
    assert resolve_mode("auto", str(tmp_path), LustreTools(lfs_bin="/nonexistent/lfs")) == "plain"
    assert resolve_mode("plain", str(fs.mount), fs.tools()) == "plain"


def test_scripts_run_directly_with_the_environment_variable(tmp_path) -> None:
    fs = standin_lustre(tmp_path, osts=2, name="direct")
    script = Path(__file__).resolve().parents[1] / "cyclone_lustre_ost" / "standin" / "lfs"
    run = subprocess.run(
        [sys.executable, str(script), "osts", str(fs.mount)],
        env={**os.environ, **fs.env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("OBDS:\n0: testfs-OST0000_UUID ACTIVE")
    unset = subprocess.run([sys.executable, str(script), "osts"], capture_output=True, text=True, check=False)
    assert unset.returncode != 0
    assert "CYCLONE_STANDIN_LUSTRE" in unset.stderr


def test_concurrent_commands_keep_every_layout(lustre_standin) -> None:
    fs = lustre_standin(osts=4)
    tools = fs.tools()
    names = [str(fs.mount / f"f{n}") for n in range(12)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda pair: tools.setstripe(pair[1], pair[0] % 4), enumerate(names)))
    assert [tools.stripe_index(name) for name in names] == [n % 4 for n in range(12)]


def test_check_failures_go_to_stderr_and_discovery_keeps_the_ost(lustre_standin) -> None:
    fs = lustre_standin(osts=[0, 1, 2, 3], inactive=[1], check_error={3: 110})
    done = fs.tools().call(fs.lfs_bin, "check", "osts")
    assert done.returncode == 0  # the real tool's status too, whatever failed
    assert done.stdout.splitlines() == [
        "testfs-OST0000-osc-ffff8803c9c0f000 active.",
        "testfs-OST0002-osc-ffff8803c9c0f000 active.",
    ]
    assert done.stderr.splitlines() == [
        "lfs check: error: check 'testfs-OST0001-osc-ffff8803c9c0f000': "
        "Cannot send after transport endpoint shutdown (108)",
        "lfs check: error: check 'testfs-OST0003-osc-ffff8803c9c0f000': Connection timed out (110)",
    ]
    found = discover(fs.tools(), str(fs.mount), "check")
    assert [(o.index, o.active, o.error) for o in found.osts] == [
        (0, True, ""),
        (1, False, "Cannot send after transport endpoint shutdown (108)"),
        (2, True, ""),
        (3, False, "Connection timed out (110)"),
    ]
    assert [o.index for o in select(found, "1,3")] == [1, 3]  # selecting a failed OST works


def test_df_prints_every_row_and_still_fails(lustre_standin) -> None:
    fs = lustre_standin(osts=[0, 1, 2, 3], statfs_error={1: 5, 2: 11})  # EIO, EAGAIN
    done = fs.tools().call(fs.lfs_bin, "df", "-v", str(fs.mount))
    assert done.returncode == 5
    assert "testfs-OST0001_UUID : Input/output error" in done.stdout.splitlines()
    assert "OST0002" not in done.stdout  # EAGAIN targets are skipped, not printed
    osts = {o.index: o for o in fs.tools().df(str(fs.mount))}
    assert sorted(osts) == [0, 1, 3]
    assert (osts[1].active, osts[1].error, osts[0].active) == (False, "Input/output error", True)
    found = discover(fs.tools(), str(fs.mount), "df")
    assert [o.index for o in found.osts] == [0, 1, 3]


@pytest.mark.parametrize(("option", "column"), [("-h", "bytes"), ("-H", "bytes"), ("-i", "Inodes")])
def test_df_in_other_units_is_refused(lustre_standin, option: str, column: str) -> None:
    fs = lustre_standin(osts=2)
    text = fs.tools().lfs("df", option, str(fs.mount))
    assert text.split()[1] == column
    with pytest.raises(ValueError, match=f"column '{column}' instead of '1K-blocks'"):
        parse_lfs_df(text)


def test_get_param_one_line_and_multi_line(lustre_standin) -> None:
    one = lustre_standin(osts=1, name="one")
    assert one.tools().lctl("get_param", "lov.*.target_obd") == (
        "lov.testfs-clilov-ffff8803c9c0f000.target_obd=0: testfs-OST0000_UUID ACTIVE\n"
    )
    assert [o.name for o in one.tools().target_obd()] == ["testfs-OST0000"]
    two = lustre_standin(osts=2, inactive=[1], name="two")
    assert two.tools().lctl("get_param", "lov.*.target_obd").splitlines()[0].endswith(".target_obd=")
    assert [(o.index, o.active) for o in discover(two.tools(), str(two.mount), "lctl").osts] == [(0, True), (1, False)]


def test_version_switch(lustre_standin) -> None:
    old = lustre_standin(osts=[0, 1, 2], flags={0: "Nf", 1: "D"}, drained=[2], version="2.12", name="old")
    new = lustre_standin(osts=[0, 1, 2], flags={0: "Nf", 1: "D"}, drained=[2], name="new")
    assert (old.tools().version(), new.tools().version()) == ((2, 12), (2, 15))
    assert old.tools().lfs("--version") == "lfs 2.12.9\n"
    assert [o.flags for o in old.tools().df(str(old.mount))] == ["", "D", ""]  # N and f came with 2.14
    assert [o.flags for o in new.tools().df(str(new.mount))] == ["Nf", "D", ""]
    old.tools().setstripe(str(old.mount / "f"), 2, strict=True)  # 2.12: -o is no stricter than -i
    assert old.layout(old.mount / "f") == [0]
    with pytest.raises(LustreError) as refused:
        new.tools().setstripe(str(new.mount / "f"), 2, strict=True)
    assert refused.value.returncode == errno.ENOBUFS
    assert refused.value.stderr == f"lfs setstripe: setstripe error for '{new.mount}/f': No buffer space available\n"
    assert setstripe_reason(refused.value) == "No buffer space available"


def test_setstripe_error_wording(lustre_standin) -> None:
    fs = lustre_standin(osts=2, inactive=[1])
    tools, mount = fs.tools(), fs.mount
    tools.setstripe(str(mount / "f"), 0)
    with pytest.raises(LustreError, match=r"status 17: lfs setstripe: setstripe error for '.*/f': stripe already set$"):
        tools.setstripe(str(mount / "f"), 0)
    with pytest.raises(LustreError) as inactive:
        tools.setstripe(str(mount / "g"), 1, strict=True)
    assert inactive.value.returncode == errno.EREMOTEIO
    assert setstripe_reason(inactive.value) == "inactive OST among your specified 1 OST(s)"


def test_directories_layouts_and_cache_advice(lustre_standin) -> None:
    fs = lustre_standin(osts=4, mdt_count=2)
    tools, mount = fs.tools(), fs.mount
    tools.mkdir_on_mdt(str(mount / "a"), 1)
    (mount / "a" / "b").mkdir()  # a plain mkdir stays on its parent's MDT
    assert tools.dir_mdts(str(mount / "a"), str(mount / "a" / "b"), str(mount)) == [1, 1, 0]
    tools.setstripe(str(mount / "a" / "b"), 3)  # a directory: the default layout of new files
    (mount / "a" / "b" / "new").write_text("x")
    assert tools.stripe_index(str(mount / "a" / "b" / "new")) == 3
    tools.drop_oss_cache(str(mount / "a" / "b" / "new"), 1 << 20)
    with pytest.raises(LustreError, match="cannot open file"):
        tools.drop_oss_cache(str(mount / "missing"), 1)
