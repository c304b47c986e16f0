"""The parsers against verbatim and format-exact tool output (see fixtures/SOURCES.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cyclone_lustre_ost.lustre import (
    Ost,
    ost_label,
    ost_name,
    parse_check_osts,
    parse_getname,
    parse_getstripe_yaml,
    parse_lctl_dl,
    parse_lfs_df,
    parse_lfs_mdts,
    parse_lfs_osts,
    parse_osc_active,
    parse_target_obd,
)

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_names_are_hex_and_df_indexes_decimal() -> None:
    assert ost_label(10) == "OST000a"
    assert ost_name("testfs", 255) == "testfs-OST00ff"
    assert ost_label(0x1234) == "OST1234"
    osts = parse_lfs_df(fixture("lfs_df_exacloud.txt"))
    assert [o.index for o in osts] == list(range(24))
    assert osts[10].name == "exacloud-OST000a"
    assert osts[10].label == "OST000a"
    assert osts[23].name == "exacloud-OST0017"


def test_lfs_df_real_capture() -> None:
    osts = parse_lfs_df(fixture("lfs_df_exacloud.txt"))
    assert all(o.active and o.flags == "" for o in osts)  # the MDT row and the summary are not OSTs
    first = osts[0]
    assert (first.total_kb, first.used_kb, first.available_kb) == (529449792, 1256, 524063444)
    assert first.fsname == "exacloud"
    assert first.fill_percent == pytest.approx(100 * 1256 / (1256 + 524063444))


def test_lfs_df_inactive_devices_errors_and_flags() -> None:
    osts = {o.index: o for o in parse_lfs_df(fixture("lfs_df_v_inactive_flags.txt"))}
    assert sorted(osts) == [0, 1, 2, 3, 4, 5, 10]
    assert osts[3] == Ost(index=3, name="testfs-OST0003", active=False)  # "OST0003 : inactive device"
    assert osts[5].active is False  # a statfs error is no usable OST either
    assert osts[5].name == "testfs-OST0005"
    assert (osts[1].flags, osts[2].flags, osts[4].flags, osts[10].flags) == ("D", "NS", "f", "Rf")
    assert osts[0].flags == ""
    assert osts[10].label == "OST000a"
    assert osts[2].fill_percent == pytest.approx(99.86, abs=0.01)
    assert osts[3].fill_percent is None


def test_lfs_osts_and_target_obd() -> None:
    osts = parse_lfs_osts(fixture("lfs_osts.txt"))
    assert [(o.index, o.name, o.active) for o in osts] == [
        (0, "testfs-OST0000", True),
        (1, "testfs-OST0001", True),
        (2, "testfs-OST0002", True),
        (3, "testfs-OST0003", False),
        (10, "testfs-OST000a", True),
    ]
    lov = parse_target_obd(fixture("lctl_target_obd.txt"))
    assert [(o.index, o.active) for o in lov] == [(0, True), (3, False), (10, True)]
    assert parse_lfs_mdts(fixture("lfs_mdts.txt")) == [0, 1]
    assert parse_lfs_osts(fixture("lfs_mdts.txt")) == []


def test_check_osts_and_osc_active_per_file_system() -> None:
    text = fixture("lfs_check_osts.txt")
    assert parse_check_osts(text, "testfs") == {0: True, 1: True, 3: False, 10: True}
    assert parse_check_osts(text, "scratch") == {0: False}
    assert parse_osc_active(fixture("lctl_osc_active.txt")) == {0: True, 3: False, 10: True}
    assert parse_osc_active(fixture("lctl_osc_active.txt"), "other") == {}


def test_getstripe_yaml_plain_layout() -> None:
    layout = parse_getstripe_yaml(fixture("lfs_getstripe_y_plain.txt"))
    assert (layout.stripe_count, layout.stripe_offset, layout.osts, layout.components) == (1, 10, (10,), 1)
    assert not layout.striped
    only = parse_getstripe_yaml(fixture("lfs_getstripe_y_ci.txt"))
    assert (only.stripe_count, only.stripe_offset, only.osts) == (1, 3, ())


def test_getstripe_other_formats() -> None:
    plain = parse_getstripe_yaml(fixture("lfs_getstripe_plain.txt"))
    assert plain.stripe_offset == 1
    pfl = parse_getstripe_yaml(fixture("lfs_getstripe_pfl.txt"))
    assert (pfl.stripe_offset, pfl.osts, pfl.components) == (1, (1, 0), 2)
    assert pfl.striped
    with pytest.raises(ValueError, match="lmm_stripe_offset"):
        parse_getstripe_yaml("error: getstripe failed for /x.\n")


def test_lctl_dl() -> None:
    devices = parse_lctl_dl(fixture("lctl_dl.txt"))
    assert len(devices) == 7
    osc = [d for d in devices if d.type == "osc"]
    assert [(d.index, d.status, d.name) for d in osc] == [
        (4, "UP", "testfs-OST0000-osc-ffff8803c9c0f000"),
        (5, "IN", "testfs-OST0003-osc-ffff8803c9c0f000"),
        (6, "UP", "testfs-OST000a-osc-ffff8803c9c0f000"),
    ]
    assert devices[0].type == "mgc"
    assert devices[0].refcount == 5


def test_getname() -> None:
    assert parse_getname("testfs-ffff8803c9c0f000 /mnt/testfs\n") == "testfs"
    assert parse_getname("my-fs-ffff8803c9c0f000 /mnt/x\n") == "my-fs"
    with pytest.raises(ValueError, match="unexpected 'lfs getname' output"):
        parse_getname("")
