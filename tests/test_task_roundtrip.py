"""Every registered task type survives the trip to plain data and over the wire unchanged.

Values for each field are generated from the field's type.  Validators are switched off while
building and rebuilding: this checks the conversion, which must hold for every value of the
type, not only for the values a task accepts.
"""

from __future__ import annotations

import enum
import types
import typing
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cyclone_core import ByteSize, Task, get_plugins, structure, unstructure
from cyclone_core.engine.protocol import Dispatch, TaskEnvelope, decode, encode

TASK_TYPES = get_plugins().task_types()

_JSON_SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text()
_PLAIN = st.recursive(
    _JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


def strategy_for(type_: Any) -> st.SearchStrategy[Any]:
    """Values of ``type_`` that plain data can express (no NaN: it never equals itself)."""
    origin, args = typing.get_origin(type_), typing.get_args(type_)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        bool: st.booleans(),
        int: st.integers(-(2**63), 2**63 - 1),  # what msgpack carries
        float: st.floats(allow_nan=False),
        str: st.text(),
        ByteSize: st.integers(0, 2**62).map(ByteSize),
        Any: _PLAIN,
        type(None): st.none(),
    }
    if type_ in simple:
        return simple[type_]
    if isinstance(type_, type) and issubclass(type_, enum.Enum):
        return st.sampled_from(type_)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*map(strategy_for, args))
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin in (list, set, frozenset):
        return st.lists(strategy_for(args[0]), max_size=4).map(origin)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(strategy_for(args[0]), max_size=4).map(tuple)
        return st.tuples(*map(strategy_for, args))
    if origin is dict:
        return st.dictionaries(strategy_for(args[0]), strategy_for(args[1]), max_size=4)
    if attrs.has(type_):
        return instances_of(type_)
    return st.from_type(type_)


def instances_of(cls: type) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    fields = {field.alias: strategy_for(hints[field.name]) for field in attrs.fields(cls) if field.init}
    return st.fixed_dictionaries(fields).map(lambda values: _build(cls, values)).filter(lambda obj: obj is not None)


def _build(cls: type, values: dict[str, Any]) -> Any:
    try:
        with attrs.validators.disabled():
            return cls(**values)
    except (ValueError, TypeError):  # a check in __attrs_post_init__ or a converter
        return None


def test_there_are_task_types_to_check() -> None:
    assert {"noop", "sleep", "fail", "crash", "hang"} <= set(TASK_TYPES)


@pytest.mark.parametrize("name", sorted(TASK_TYPES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_task_round_trips_through_plain_data_and_the_wire(name: str, data: st.DataObject) -> None:
    cls: type[Task] = TASK_TYPES[name]
    task = data.draw(instances_of(cls), label=name)
    with attrs.validators.disabled():
        plain = unstructure(task)
        assert structure(plain, cls, where=f"task '{name}'") == task
        frame = encode(Dispatch(tasks=[TaskEnvelope(id="t-1", type=name, args=plain)]))
        (envelope,) = decode(frame).tasks  # type: ignore[union-attr]
        assert envelope.type == name
        assert structure(envelope.args, cls, where=f"task '{name}'") == task
