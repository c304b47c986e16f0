from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cyclone_core.engine import protocol as p
from cyclone_core.model import Metric, Result, Status

ids = st.text(min_size=1, max_size=20)
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
    timeout=st.none() | st.floats(0, 1e6),
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
    status=st.sampled_from(Status),
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
        (msgpack.packb({"v": p.PROTOCOL_VERSION, "t": "hello"}), "controller_id: required but missing"),
    ],
)
def test_bad_frames_are_one_line_protocol_errors(frame: bytes, error: str) -> None:
    with pytest.raises(p.ProtocolError, match=error) as info:
        p.decode(frame)
    assert "\n" not in str(info.value)


def test_oversized_frame_is_refused_unparsed() -> None:
    with pytest.raises(p.ProtocolError, match="exceeds"):
        p.decode(b"\x00" * (p.MAX_FRAME_BYTES + 1))
