"""The batched receive loop hands every queued frame to the pipeline, in order, in one call."""

from __future__ import annotations

import can

from agent.io.fastbus import read_batch


def test_read_batch_processes_every_queued_frame_in_order_and_counts_error_frames() -> None:
    rx = can.Bus(interface="virtual", channel="fastbus-test")
    tx = can.Bus(interface="virtual", channel="fastbus-test", preserve_timestamps=True)
    try:
        for i in range(50):
            tx.send(can.Message(timestamp=float(i), arbitration_id=0x100 + i, data=bytes([i])))
        tx.send(can.Message(is_error_frame=True))
        got: list[tuple[float, int, bytes]] = []
        errors: list[int] = []
        n = read_batch(rx, lambda ts, fid, data: got.append((ts, fid, data)), lambda m: errors.append(1), 1.0, 0.0)
        assert n == 51 and errors == [1]
        assert got == [(float(i), 0x100 + i, bytes([i])) for i in range(50)]
        assert read_batch(rx, lambda *_: None, lambda m: None, 0.01, 0.0) == 0  # silence
    finally:
        tx.shutdown()
        rx.shutdown()
