"""The parsers against verbatim and format-exact tool output (see fixtures/SOURCES.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cyclone_lustre_ost.lustre import (
    CheckedOst,
    Ost,
    ost_label,
    ost_name,
    parse_check_osts,
    parse_get_param,
    parse_getname,
    parse_getstripe_yaml,
    parse_lctl_dl,
    parse_lfs_df,
    parse_lfs_mdts,
    parse_lfs_osts,
    parse_osc_active,
    parse_target_obd,
    parse_version,
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


def test_lfs_df_gsi_capture_784_osts() -> None:
    osts = parse_lfs_df(fixture("lfs_df_gsi_784_osts.txt"))
    assert [o.index for o in osts] == list(range(784))
    assert (osts[10].name, osts[783].name) == ("lustrefs-OST000a", "lustrefs-OST030f")
    assert {o.index: o.flags for o in osts if o.flags} == {402: "D"}
    assert all(o.active for o in osts)
    assert osts[0].total_kb == 71145271296


def test_lfs_df_inactive_devices_errors_and_flags() -> None:
    osts = {o.index: o for o in parse_lfs_df(fixture("lfs_df_v_inactive_flags.txt"))}
    assert sorted(osts) == [0, 1, 2, 3, 4, 5, 10]
    # "OST0003 : inactive device"
    assert osts[3] == Ost(index=3, name="testfs-OST0003", active=False)
    assert (osts[5].active, osts[5].error) == (False, "Input/output error")  # a failed statfs
    assert osts[5].name == "testfs-OST0005"
    assert (osts[1].flags, osts[2].flags, osts[4].flags, osts[10].flags) == ("D", "NS", "f", "Rf")
    assert osts[0].flags == ""
    assert osts[10].label == "OST000a"
    assert osts[2].fill_percent == pytest.approx(99.86, abs=0.01)
    assert osts[3].fill_percent is None


@pytest.mark.parametrize(("name", "column"), [("lfs_df_h.txt", "bytes"), ("lfs_df_i.txt", "Inodes")])
def test_lfs_df_human_and_inode_output_is_refused_by_its_header(name: str, column: str) -> None:
    with pytest.raises(ValueError, match=f"^line 1: column '{column}' instead of '1K-blocks'"):
        parse_lfs_df(fixture(name))


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
    one = parse_target_obd(fixture("lctl_target_obd_one_line.txt"))  # short values share the name's line
    assert [(o.index, o.name, o.active) for o in one] == [(0, "testfs-OST0000", True)]
    assert parse_lfs_mdts(fixture("lfs_mdts.txt")) == [0, 1]
    assert parse_lfs_osts(fixture("lfs_mdts.txt")) == []


def test_check_osts_reads_failures_from_stderr() -> None:
    stdout, stderr = fixture("lfs_check_osts.stdout"), fixture("lfs_check_osts.stderr")
    assert parse_check_osts(stdout, stderr, "testfs") == [
        CheckedOst(0, "testfs"),
        CheckedOst(1, "testfs"),
        CheckedOst(3, "testfs", "Cannot send after transport endpoint shutdown (108)"),
        CheckedOst(4, "testfs", "Connection timed out (110)"),
        CheckedOst(10, "testfs"),
    ]
    scratch = parse_check_osts(stdout, stderr, "scratch")
    assert [(o.index, o.active) for o in scratch] == [(0, False), (1, True)]
    assert parse_check_osts(stdout, "", "testfs")[2] == CheckedOst(10, "testfs")  # stdout alone: only the answers


def test_get_param_both_layouts_and_osc_active() -> None:
    text = fixture("lctl_target_obd_one_line.txt") + fixture("lctl_target_obd.txt") + fixture("lctl_osc_active.txt")
    params = parse_get_param(text)
    assert params["lov.testfs-clilov-ffff8803c9c0f000.target_obd"].splitlines()[-1] == "10: testfs-OST000a_UUID ACTIVE"
    assert params["osc.testfs-OST0003-osc-ffff8803c9c0f000.active"] == "0"
    assert parse_osc_active(fixture("lctl_osc_active.txt")) == {0: True, 3: False, 10: True}
    assert parse_osc_active(fixture("lctl_osc_active.txt"), "other") == {}


def test_getstripe_yaml_plain_layout() -> None:
    layout = parse_getstripe_yaml(fixture("lfs_getstripe_y_plain.txt"))
    assert (layout.stripe_count, layout.stripe_offset, layout.osts, len(layout.components)) == (1, 10, (10,), 1)
    assert not layout.striped
    assert not layout.composite
    only = parse_getstripe_yaml(fixture("lfs_getstripe_y_ci.txt"))
    assert (only.stripe_count, only.stripe_offset, only.osts) == (1, 3, (3,))


def test_getstripe_data_on_mdt_has_no_ost() -> None:
    dom = parse_getstripe_yaml(fixture("lfs_getstripe_y_dom.txt"))
    assert dom.dom
    assert dom.composite
    assert dom.components[0].stripe_offset == 0  # printed as 0, yet no object on OST0000
    assert (dom.osts, dom.stripe_offset) == ((), None)
    assert dom.describe() == "the MDT (Data-on-MDT)"


def test_getstripe_composite_per_component() -> None:
    mixed = parse_getstripe_yaml(fixture("lfs_getstripe_y_dom_pfl.txt"))
    assert [(c.pattern, c.instantiated, c.objects) for c in mixed.components] == [
        ("mdt", True, ()),
        ("raid0", True, (10,)),
        ("raid0", False, ()),  # not instantiated: lmm_stripe_offset -1, no objects yet
    ]
    assert (mixed.osts, mixed.stripe_offset, mixed.dom, mixed.stripe_count) == ((10,), 10, True, 1)
    pfl = parse_getstripe_yaml(fixture("lfs_getstripe_y_pfl.txt"))
    assert (pfl.osts, pfl.dom, pfl.striped) == ((0, 3, 10), False, True)
    assert pfl.describe() == "OST0000,OST0003,OST000a"


def test_getstripe_other_formats() -> None:
    plain = parse_getstripe_yaml(fixture("lfs_getstripe_plain.txt"))
    assert plain.stripe_offset == 1
    pfl = parse_getstripe_yaml(fixture("lfs_getstripe_pfl.txt"))  # -v style: "- 0: { l_ost_idx: 1, ... }"
    assert (pfl.stripe_offset, pfl.osts, pfl.composite) == (1, (1, 0), True)
    assert pfl.striped
    with pytest.raises(ValueError, match="lmm_stripe_offset"):
        parse_getstripe_yaml("error: getstripe failed for /x.\n")


def test_version() -> None:
    assert parse_version("lfs 2.15.7\n") == (2, 15)
    assert parse_version("lustre: 2.12.9_ddn3\nkernel: patchless_client\n") == (2, 12)
    with pytest.raises(ValueError, match="no Lustre version"):
        parse_version("lfs: unknown option\n")


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
