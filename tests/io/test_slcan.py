"""The chunked slcan reader against the simulator's slcan adapter on a pseudo-terminal."""

from __future__ import annotations

import time

import can

from agent.core.settings import CanConfig
from agent.io.slcan import ChunkedSlcanBus, parse_line
from agent.io.sources import open_bus
from simulators import SlcanPtyBus


def _recv_all(bus: can.BusABC, n: int, timeout: float = 5.0) -> list[can.Message]:
    got: list[can.Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        msg = bus.recv(0.2)
        if msg is not None:
            got.append(msg)
    return got


def test_a_thousand_frames_sent_by_the_adapter_arrive_in_order_and_intact() -> None:
    adapter = SlcanPtyBus()
    bus = ChunkedSlcanBus(channel=adapter.tty_path)
    try:
        sent = [can.Message(arbitration_id=0x18FECA17 if i % 7 == 0 else 0x100 + i % 50, is_extended_id=i % 7 == 0,
                            data=bytes([i % 256] * (i % 9))) for i in range(1000)]
        for msg in sent:
            adapter.send(msg)
        got = _recv_all(bus, len(sent))
        assert [(m.arbitration_id, m.is_extended_id, bytes(m.data)) for m in got] == \
               [(m.arbitration_id, m.is_extended_id, bytes(m.data)) for m in sent]
    finally:
        bus.shutdown()
        adapter.shutdown()


def test_frames_sent_by_the_agent_reach_the_adapter() -> None:
    adapter = SlcanPtyBus()
    bus = ChunkedSlcanBus(channel=adapter.tty_path)
    try:
        bus.send(can.Message(arbitration_id=0x6A1, is_extended_id=False, data=b"\x01"))
        got = _recv_all(adapter, 1)
        assert got and got[0].arbitration_id == 0x6A1 and bytes(got[0].data) == b"\x01"
    finally:
        bus.shutdown()
        adapter.shutdown()


def test_config_option_reader_chunked_selects_it_without_python_side_filters() -> None:
    adapter = SlcanPtyBus()
    cfg = CanConfig(interface="slcan", channel=adapter.tty_path, options={"reader": "chunked"})
    bus = open_bus(cfg, [{"can_id": 0x1F2, "can_mask": 0x7FF, "extended": False}])
    try:
        assert isinstance(bus, ChunkedSlcanBus)
        adapter.send(can.Message(arbitration_id=0x123, is_extended_id=False, data=b"\x00"))
        adapter.send(can.Message(arbitration_id=0x1F2, is_extended_id=False, data=b"\x01\x02"))
        got = _recv_all(bus, 2)
        # An slcan adapter cannot filter: python-can would do it in Python, per frame; the
        # decoder's dict lookup drops the unmapped id more cheaply (agent.sources).
        assert bus.filters is None
        assert [m.arbitration_id for m in got] == [0x123, 0x1F2]
    finally:
        bus.shutdown()
        adapter.shutdown()


def test_garbage_and_acknowledgements_are_skipped_not_raised() -> None:
    for line in (b"", b"z", b"\x07", b"tXYZ8", b"t1234", b"t1239" + b"00" * 9, b"V1013"):
        assert parse_line(line, 0.0) is None
    assert bytes(parse_line(b"t1F220102", 0.0).data) == b"\x01\x02"  # type: ignore[union-attr]
