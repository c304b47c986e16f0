"""The table layouts without a server: statements and the result -> row mapping."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

import pytest
from cyclone_mysql_sink import layouts
from cyclone_mysql_sink.layouts import LAYOUTS, OST_PERF, RESULTS
from hypothesis import given
from hypothesis import strategies as st
from MySQLdb import cursors

from cyclone_core import Metric, Status


@pytest.mark.parametrize("layout", list(LAYOUTS.values()), ids=list(LAYOUTS))
def test_the_insert_is_one_mysqlclient_rewrites_into_multi_row_statements(layout) -> None:
    statement = layout.insert_sql("cyclone_results")
    # The pattern executemany uses to decide between one multi-row INSERT and a loop of rows.
    match = cursors.RE_INSERT_VALUES.match(statement)
    assert match is not None
    assert match.group(3).strip() == "ON DUPLICATE KEY UPDATE task_id = task_id"
    assert match.group(2).count("%s") == len(layout.columns)


@pytest.mark.parametrize("layout", list(LAYOUTS.values()), ids=list(LAYOUTS))
def test_the_schema_has_no_zero_dates_and_a_unique_task_id(layout) -> None:
    ddl = layout.create_sql("t")
    assert "0000" not in ddl
    assert "TIMESTAMP DEFAULT" not in ddl.upper()
    assert "UNIQUE KEY task_id (task_id)" in ddl
    assert ddl.endswith("ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci")
    defined = set(re.findall(r"^  ([a-z_]+) ", ddl, re.MULTILINE))
    assert set(layout.columns) <= defined


def test_the_ost_comes_from_labels_then_payload_then_key(make_result) -> None:
    def ost_of(**fields) -> str | None:
        row = OST_PERF.to_row(make_result("t1", task_type="lustre-ost-io", status=Status.FAILED, **fields))
        assert row is not None
        return row[OST_PERF.columns.index("ost")]

    labels = {"fs": "scratch", "component": "ost", "target": "scratch-OST0010"}
    labelled = [Metric("cyclone_lustre_ost_read_seconds", 1.0, labels=labels)]
    assert ost_of(metrics=labelled, payload={"target": "scratch-OST9999"}, key="OST0001") == "OST0010"
    assert ost_of(payload={"target": "scratch-OST00fe", "ost": "OST9999"}) == "OST00fe"
    assert ost_of(payload={"ost": 10}, key="OST0001") == "OST000a"  # an index: Lustre's hex name
    assert ost_of(payload={"ost": "OST00ff"}) == "OST00ff"
    assert ost_of(key="scratch-OST002b-probe") == "OST002b"
    assert ost_of(key="ost7") is None


def test_results_of_other_task_types_have_no_ost_perf_row(make_result) -> None:
    assert OST_PERF.rows([make_result("t1"), make_result("t2", task_type="file-create")]) == []
    probe_bytes = Metric("cyclone_lustre_ost_probe_bytes", 1.0)
    other_type_with_metrics = make_result("t3", task_type="my-probe", metrics=[probe_bytes])
    assert len(OST_PERF.rows([other_type_with_metrics])) == 1


def test_durations_keep_whole_seconds_and_sub_second_precision(ost_result) -> None:
    row = dict(zip(OST_PERF.columns, OST_PERF.to_row(ost_result("t1")) or (), strict=True))
    assert (row["write_duration"], row["write_seconds"]) == (2, 2.049)
    assert (row["read_duration"], row["read_seconds"]) == (0, 0.4)
    assert row["write_timestamp"] == "2025-11-24 16:00:01.500000"


def test_a_task_id_too_long_for_the_key_is_refused(make_result) -> None:
    with pytest.raises(ValueError, match="is longer than 255 characters"):
        RESULTS.rows([make_result("x" * 256)])


def _utc_reference(epoch: float) -> str | None:
    """What the layouts wrote before they made the text themselves."""
    if not epoch or not math.isfinite(epoch):
        return None
    try:
        return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    except (OverflowError, OSError, ValueError):
        return None


@given(st.floats(min_value=-7e10, max_value=3e11) | st.floats(min_value=1.7e9, max_value=1.9e9))
def test_timestamps_are_the_text_of_datetime_fromtimestamp(epoch: float) -> None:
    assert layouts._utc(epoch) == _utc_reference(epoch)


@pytest.mark.parametrize(
    "epoch",
    [0.0, -0.0, math.nan, math.inf, -math.inf, 1e300, -1e300, 0.5, -0.5, 2.5e-7, 1.0000005, 1_764_000_000.999_999_7,
     math.nextafter(253_402_300_800.0, 0), 253_402_300_800.0, -62_135_596_800.0, -62_135_596_800.5],
)  # fmt: skip
def test_timestamps_at_the_edges(epoch: float) -> None:
    assert layouts._utc(epoch) == _utc_reference(epoch)
