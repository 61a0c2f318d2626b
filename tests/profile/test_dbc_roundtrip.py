"""Every message of every DBC in dbc/ encodes and decodes back to the same values."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import cantools
import pytest
from cantools.database.can import Message, Signal
from hypothesis import given, settings
from hypothesis import strategies as st

DBC_DIR = Path(__file__).resolve().parents[2] / "dbc"
DBCS = sorted(DBC_DIR.glob("*.dbc"))


@cache
def _load(path: Path) -> cantools.database.can.Database:
    return cantools.database.load_file(str(path), strict=True)


MESSAGES = [
    pytest.param(path, message.name, id=f"{path.stem}:{message.name}")
    for path in DBCS
    for message in _load(path).messages
]


def test_there_is_a_dbc_to_test() -> None:
    assert DBCS, f"no DBC files in {DBC_DIR}"


def _raw_range(signal: Signal) -> tuple[int, int]:
    """Raw values inside both the bit field and the signal's physical [min|max]."""
    if signal.is_signed:
        lo, hi = -(1 << (signal.length - 1)), (1 << (signal.length - 1)) - 1
    else:
        lo, hi = 0, (1 << signal.length) - 1
    scale, offset = signal.conversion.scale, signal.conversion.offset
    if signal.minimum is not None:
        lo = max(lo, int(-(-(signal.minimum - offset) // scale)))
    if signal.maximum is not None:
        hi = min(hi, int((signal.maximum - offset) // scale))
    return lo, hi


def _values(message: Message) -> st.SearchStrategy[dict[str, int]]:
    """Raw values for one multiplexer page (or the whole message when it has none)."""
    def page(mux_value: int | None) -> st.SearchStrategy[dict[str, int]]:
        fields = {}
        for signal in message.signals:
            if signal.multiplexer_ids is not None and mux_value not in signal.multiplexer_ids:
                continue
            if signal.is_multiplexer:
                fields[signal.name] = st.just(mux_value)
            else:
                fields[signal.name] = st.integers(*_raw_range(signal))
        return st.fixed_dictionaries(fields)

    mux = [s for s in message.signals if s.is_multiplexer]
    if not mux:
        return page(None)
    ids = sorted({i for s in message.signals for i in (s.multiplexer_ids or [])})
    return st.sampled_from(ids).flatmap(page)


@pytest.mark.parametrize(("path", "name"), MESSAGES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_encode_then_decode_gives_back_every_signal(path: Path, name: str, data: st.DataObject) -> None:
    message = _load(path).get_message_by_name(name)
    raw = data.draw(_values(message))
    payload = message.encode(raw, scaling=False)
    assert len(payload) == message.length
    assert message.decode(payload, scaling=False, decode_choices=False) == raw
    physical = message.decode(payload, decode_choices=False)
    assert message.decode(message.encode(physical)) == message.decode(payload)


@pytest.mark.parametrize("path", DBCS, ids=lambda p: p.stem)
def test_every_periodic_message_has_a_cycle_time_between_10_ms_and_1_s(path: Path) -> None:
    for message in _load(path).messages:
        if message.send_type == "Event":
            continue
        assert message.cycle_time is not None and 10 <= message.cycle_time <= 1000, message.name
