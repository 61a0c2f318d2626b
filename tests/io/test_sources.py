"""Bus opening: python-can software filters are not used (the decoder drops unmapped ids); link state."""

from __future__ import annotations

from pathlib import Path

import can

from agent.core.settings import CanConfig
from agent.io.fastbus import read_batch
from agent.io.sources import link_is_up, open_bus


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


def test_link_state_is_read_from_the_interface_flags(tmp_path: Path) -> None:
    # A real sysfs has lo, which is always up; an interface that does not exist is "cannot tell".
    assert link_is_up("lo") is True
    assert link_is_up("can-does-not-exist") is None
    # can0 as the kernel shows it without a bitrate (down: 0x80 NOARP) and once up (0xc1).
    for name, flags in (("can0", "0x80"), ("can1", "0xc1")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "flags").write_text(flags + "\n")
    assert link_is_up("can0", tmp_path) is False
    assert link_is_up("can1", tmp_path) is True
    assert link_is_up("../can0", tmp_path) is None  # a channel is a name, never a path
