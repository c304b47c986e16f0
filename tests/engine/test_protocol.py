from __future__ import annotations

import math
import random
import string

import msgpack
import pytest
from engine_support import damage
from hypothesis import given, settings
from hypothesis import strategies as st

from cyclone_core.engine import protocol as p
from cyclone_core.model import Attempt, Metric, Result, Status

ids = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(string.ascii_letters + string.digits),
    st.text(string.ascii_letters + string.digits + "._-", max_size=19),
)
plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
envelopes = st.builds(
    p.TaskEnvelope,
    id=ids,
    type=ids,
    args=st.dictionaries(st.text(max_size=8), plain, max_size=4),
    attempt=st.integers(1, 10),
    timeout=st.none() | st.floats(0.001, 1e6),
    key=st.none() | ids,
)
metrics = st.builds(
    Metric,
    name=ids,
    value=st.floats(allow_nan=False),
    labels=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)
results = st.builds(
    Result,
    task_id=ids,
    task_type=ids,
    status=st.sampled_from([Status.OK, Status.FAILED, Status.TIMEOUT, Status.CRASHED]),
    attempt=st.integers(1, 2**31 - 1),
    metrics=st.lists(metrics, max_size=3),
    error=st.none() | st.text(max_size=30),
)
messages = st.one_of(
    st.builds(p.Dispatch, tasks=st.lists(envelopes, max_size=5)),
    st.builds(p.Results, results=st.lists(results, max_size=5), credit=st.integers(0, 1000)),
    st.builds(p.Ack, task_ids=st.lists(ids, max_size=5)),
    st.builds(p.Heartbeat, running=st.lists(ids, max_size=5), draining=st.booleans()),
    st.builds(
        p.Hello,
        controller_id=ids,
        host=ids,
        pid=st.integers(1, 2**22),
        workers=st.integers(1, 64),
        credit=st.integers(0, 4096),
        task_types=st.lists(ids, max_size=4),
    ),
    st.builds(p.Handback, task_ids=st.lists(ids, max_size=5)),
    st.just(p.Ping()),
    st.just(p.StatusRequest()),
)


@given(messages)
def test_every_message_round_trips(message: p.Message) -> None:
    assert p.decode(p.encode(message)) == message


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (b"\xc1garbage", "not a msgpack message"),
        (msgpack.packb([1, 2]), "expected a map"),
        (msgpack.packb({"v": 99, "t": "ping"}), "protocol version 99 is not supported"),
        (msgpack.packb({"t": "ping"}), "protocol version None is not supported"),
        (msgpack.packb({"v": p.PROTOCOL_VERSION, "t": "pickle"}), "unknown message type 'pickle'"),
        (msgpack.packb({"v": p.PROTOCOL_VERSION, "t": "ack", "task_ids": "x", "extra": 1}), "invalid ack message"),
        (msgpack.packb({"v": p.PROTOCOL_VERSION, "t": "hello"}), "invalid hello message: controller_id: missing"),
    ],
)
def test_bad_frames_are_one_line_protocol_errors(frame: bytes, error: str) -> None:
    with pytest.raises(p.ProtocolError, match=error) as info:
        p.decode(frame)
    assert "\n" not in str(info.value)


@settings(max_examples=300)
@given(messages, st.randoms(use_true_random=False))
def test_a_damaged_message_decodes_or_is_one_line_protocol_error(message: p.Message, rng: random.Random) -> None:
    """Any part of a valid message replaced by any value, or dropped: never another exception."""
    error = ""
    try:
        p.decode(damage(p.encode(message), rng))
    except p.ProtocolError as exc:
        error = str(exc)
    assert "\n" not in error


def test_oversized_frame_is_refused_unparsed() -> None:
    with pytest.raises(p.ProtocolError, match="exceeds"):
        p.decode(b"\x00" * (p.MAX_FRAME_BYTES + 1))


def test_dispatch_frames_from_records_equal_encoded_envelopes() -> None:
    tasks = [p.TaskEnvelope("r-1", "sleep", {"seconds": 1}, 2, 5.0, "k1"), p.TaskEnvelope("r-2", "noop")]
    assert p.decode(p.encode_dispatch(tasks)) == p.Dispatch(tasks)
    assert p.encode_dispatch(tasks) == p.encode(p.Dispatch(tasks))


def test_result_rows_round_trip_with_metrics_and_history() -> None:
    result = Result(
        "r-1",
        "lustre-ost-io",
        Status.QUARANTINED,
        key="OST0007",
        attempt=3,
        started_at=1.5,
        duration=2.5,
        error="boom",
        metrics=[Metric("write_bytes_per_second", 1e9, "B/s", {"ost": "OST0007"}, 12.0)],
        payload={"file": "/x"},
        controller="node01-1",
        history=[Attempt(1, Status.CRASHED, "segfault", "node02-9", 3.0), Attempt(2, Status.TIMEOUT)],
    )
    assert p.result_from_row(msgpack.unpackb(msgpack.packb(p.result_to_row(result)))) == result


def test_a_malformed_result_that_names_its_task_becomes_a_failed_result() -> None:
    good = p.result_to_row(Result("r-1", "noop", Status.OK))
    bad = p.result_to_row(Result("r-2", "noop", Status.OK, attempt=2, controller="c1"))
    bad[6] = "not a duration"
    frame = msgpack.packb({"v": p.PROTOCOL_VERSION, "t": "results", "results": [good, bad], "credit": 2})
    message = p.decode(frame)
    assert isinstance(message, p.Results)
    ok, failed = message.results
    assert ok == Result("r-1", "noop", Status.OK)
    assert (failed.task_id, failed.status, failed.attempt, failed.controller) == ("r-2", Status.FAILED, 2, "c1")
    assert (
        failed.error == "malformed result: duration: expected a number of seconds from 0 to 1e+09, got 'not a duration'"
    )


@pytest.mark.parametrize(
    ("field", "rows", "error"),
    [
        ("results", [["no", "task", "id"]], "results[0]: a result must be a list of 12 fields"),
        ("results", "nope", "results: expected a list"),
        ("tasks", [["r-1", "noop", [], 1, None, None]], "tasks[0]: args: expected a map"),
        ("tasks", [["r-1", "noop", {}, "1", None, None]], "tasks[0]: attempt: expected a whole number"),
    ],
)
def test_malformed_rows_without_a_task_are_protocol_errors(field: str, rows: object, error: str) -> None:
    tag = "results" if field == "results" else "dispatch"
    with pytest.raises(p.ProtocolError, match=error.replace("[", r"\[").replace("]", r"\]")):
        p.decode(msgpack.packb({"v": p.PROTOCOL_VERSION, "t": tag, field: rows}))


def frame(tag: str, **fields: object) -> bytes:
    return msgpack.packb({"v": p.PROTOCOL_VERSION, "t": tag, **fields})


HELLO = {"controller_id": "c1", "host": "h1", "pid": 7, "workers": 2, "credit": 4, "task_types": ["noop"]}


@pytest.mark.parametrize(
    ("tag", "fields", "error"),
    [
        ("hello", {**HELLO, "pid": "42"}, "pid: expected a whole number from 1 to 4194304, got '42'"),
        ("hello", {**HELLO, "pid": True}, "pid: expected a whole number"),
        ("hello", {**HELLO, "credit": -1}, "credit: expected a whole number from 0"),
        ("hello", {**HELLO, "credit": 2**63}, "credit: expected a whole number from 0"),
        ("hello", {**HELLO, "workers": 1.0}, "workers: expected a whole number"),
        ("hello", {**HELLO, "controller_id": "c1\nforged log line"}, "controller_id: expected a controller id"),
        ("hello", {**HELLO, "controller_id": "x" * 129}, "controller_id: expected a controller id of at most 128"),
        ("hello", {**HELLO, "host": "h" * 1_000_000}, "host: expected a host name of at most 253"),
        ("hello", {**HELLO, "task_types": ["noop"] * 1025}, "task_types: expected at most 1024 task type names"),
        ("hello", {**HELLO, "task_types": ["../x"]}, r"task_types\[0\]: expected a name matching"),
        ("heartbeat", {"running": ["r-1"], "draining": 1}, "draining: expected true or false, got 1"),
        ("heartbeat", {"running": ["r-1\x00"]}, r"running\[0\]: expected a name matching"),
        (
            "welcome",
            {"master_id": "m", "run_id": "r", "heartbeat_interval": math.nan, "controller_timeout": 1.0},
            "heartbeat_interval: expected a number from 0 to 86400, got nan",
        ),
        (
            "welcome",
            {"master_id": "m", "run_id": "r", "heartbeat_interval": -1, "controller_timeout": 1.0},
            "heartbeat_interval: expected a number",
        ),
        (
            "welcome",
            {"master_id": "m", "run_id": "r", "heartbeat_interval": 1, "controller_timeout": math.inf},
            "controller_timeout: expected a number",
        ),
        ("goodbye", {"reason": "bye\nforged"}, "reason: expected printable a reason"),
        ("results", {"results": [], "credit": -5}, "credit: expected a whole number from 0"),
        ("dispatch", {"tasks": [["r-1", "noop", {}, 1, math.nan, None]]}, r"tasks\[0\]: timeout: expected a number"),
        ("dispatch", {"tasks": [["r-1", "noop", {}, 1, -1.0, None]]}, r"tasks\[0\]: timeout: expected a number"),
        ("dispatch", {"tasks": [["r-1", "noop", {}, 0, None, None]]}, r"tasks\[0\]: attempt: expected a whole number"),
        (
            "dispatch",
            {"tasks": [["r-1", "../../bin/sh", {}, 1, None, None]]},
            r"tasks\[0\]: type: expected a task type",
        ),
    ],
)
def test_the_wire_is_strict(tag: str, fields: dict[str, object], error: str) -> None:
    """No coercion, ranges, lengths and alphabets: each bad field is a one-line error naming it."""
    with pytest.raises(p.ProtocolError, match=error) as info:
        p.decode(frame(tag, **fields))
    assert "\n" not in str(info.value)


def test_a_controller_cannot_report_a_verdict_or_a_history() -> None:
    quarantined = p.result_to_row(Result("r-1", "noop", Status.QUARANTINED))
    with_history = p.result_to_row(Result("r-2", "noop", Status.FAILED, history=[Attempt(1, Status.CRASHED)]))
    message = p.decode(frame("results", results=[quarantined, with_history]))
    assert isinstance(message, p.Results)
    assert [(r.task_id, r.status) for r in message.results] == [("r-1", Status.FAILED), ("r-2", Status.FAILED)]
    assert "status: expected one of crashed, failed, ok, timeout" in (message.results[0].error or "")
    assert "history: expected an empty list" in (message.results[1].error or "")


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"n": 2**63}, "within 64 bits"),
        ({"x": math.inf}, "finite"),
        (None, None),
    ],
)
def test_result_payloads_are_what_a_sink_can_store(payload: object, error: str | None) -> None:
    row = p.result_to_row(Result("r-1", "noop", Status.OK))
    row[9] = payload
    (result,) = p.decode(frame("results", results=[row])).results  # type: ignore[union-attr]
    if error is None:
        assert result.status is Status.OK
    else:
        assert result.status is Status.FAILED
        assert error in (result.error or "")


def test_deeply_nested_payloads_are_refused() -> None:
    nested: object = 1
    for _ in range(500):
        nested = {"a": nested}
    row = p.result_to_row(Result("r-1", "noop", Status.OK))
    row[9] = nested
    (result,) = p.decode(frame("results", results=[row])).results  # type: ignore[union-attr]
    assert result.status is Status.FAILED
    assert "nested at most 32 deep" in (result.error or "")


def test_every_declared_message_is_in_the_union_and_each_side_handles_what_it_receives() -> None:
    received = p.received_by(p.Sender.CONTROLLER, p.Sender.CLIENT) | p.received_by(p.Sender.MASTER)
    assert received == {spec.cls for spec in p.specs()}
    with pytest.raises(TypeError, match=r"missing \['Goodbye'\]"):
        p.handler_table("test", [p.Sender.CONTROLLER], dict.fromkeys(p.received_by(p.Sender.CONTROLLER) - {p.Goodbye}))
    with pytest.raises(TypeError, match=r"unexpected \['Ping'\]"):
        p.handler_table("test", [p.Sender.CLIENT], {p.StatusRequest: None, p.Ping: None})


@pytest.mark.parametrize(
    ("row", "error"),
    [
        (["noop", {}, None], "a task must be a list of 4 fields"),
        (["../x", {}, None, None], "type: expected a task type name"),
        (["noop", [], None, None], "args: expected a map"),
        (["noop", {"x": b"\x00"}, None, None], "args: expected plain data, got bytes"),
        (["noop", {}, 7, None], "key: expected a string"),
        (["noop", {}, None, 0], "timeout: expected a number of seconds above 0"),
        (["noop", {}, None, math.nan], "timeout: expected a number of seconds above 0"),
    ],
)
def test_submitted_tasks_are_checked_field_by_field(row: list[object], error: str) -> None:
    with pytest.raises(p.ProtocolError, match=rf"invalid submit message: tasks\[0\]: {error}"):
        p.decode(frame("submit", tasks=[row], done=True))


def test_submit_and_fetch_are_bounded_and_fetched_results_round_trip() -> None:
    with pytest.raises(p.ProtocolError, match="tasks: expected at most 10000 items"):
        p.decode(frame("submit", tasks=[["noop", {}, None, None]] * 10_001))
    with pytest.raises(p.ProtocolError, match="limit: expected a whole number from 1 to 10000"):
        p.decode(p.encode(p.Fetch(0, 0)))
    result = Result("r-1", "fail", Status.QUARANTINED, attempt=3, error="boom", history=[Attempt(1, Status.FAILED)])
    fetched = p.Fetched([result], last=41, finished=True, missed=2)
    assert p.decode(p.encode(fetched)) == fetched
