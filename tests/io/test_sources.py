"""Bus opening: python-can software filters are not used (the decoder drops unmapped ids)."""

from __future__ import annotations

import can

from agent.core.settings import CanConfig
from agent.io.fastbus import read_batch
from agent.io.sources import open_bus


def test_a_batch_on_a_virtual_bus_reads_past_unmapped_frames() -> None:
    filters = [{"can_id": 0x100, "can_mask": 0x7FF, "extended": False}]
    rx = open_bus(CanConfig(interface="virtual", channel="sources-test"), filters)
    tx = can.Bus(interface="virtual", channel="sources-test")
    try:
        for i in range(300):
            tx.send(can.Message(arbitration_id=0x100 if i % 3 == 0 else 0x200, data=b"\x01"))
        seen: list[int] = []
        n = read_batch(rx, lambda ts, fid, data: seen.append(fid), lambda: None, 1.0, batch_s=0)
    finally:
        rx.shutdown()
        tx.shutdown()
    assert rx.filters is None  # no per-frame filtering in Python
    assert n == 300 and seen.count(0x100) == 100  # one batch, nothing lost after an unmapped frame
