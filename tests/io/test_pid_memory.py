"""Supported-PID bitmaps remembered across restarts in the state dir (a strict, size-capped JSON)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import can
import pytest
from diag_helpers import polling

from agent.core import vss
from agent.core.pipeline import Pipeline
from agent.io.diag_runtime import DiagRuntime
from agent.io.pid_memory import MAX_FILE_BYTES, load_supported

CONFIG = """
[vehicle]
id = "pid-car"
[can]
interface = "virtual"
[diagnostics]
standard_pids = true
dtc_period_s = 0
"""
BITMAP_0100 = b"\x06\x41\x00\x80\x08\x00\x00"  # PIDs 01 and 0D; 0x20 not set: no further bitmap


def runtime(tmp_path: Path, memory: Path) -> tuple[DiagRuntime, Pipeline, list[can.Message]]:
    path = tmp_path / "car.toml"
    path.write_text(CONFIG)
    diag, sent = polling(path, memory=memory, vehicle_id="pid-car")
    return diag, diag.pipeline, sent


def requests(sent: list[can.Message]) -> list[tuple[int, bytes]]:
    return [(m.arbitration_id, bytes(m.data[1:1 + m.data[0]])) for m in sent if m.data[0] < 0x10]


def discover(diag: DiagRuntime, sent: list[can.Message], t: float) -> float:
    """The car talks; the functional 0100 goes out, 0x7E8 answers; the functional request collects
    answers until its deadline, then discovery ends."""
    diag.on_frame(t, 0x510, bytes(8))
    diag.poll(t)
    assert requests(sent) == [(0x7DF, b"\x01\x00")]
    diag.on_frame(t + 0.02, 0x7E8, BITMAP_0100.ljust(8, b"\xaa"))
    for _ in range(30):
        t += 0.1
        diag.on_frame(t, 0x510, bytes(8))
        diag.poll(t)
    assert diag.saver is not None
    diag.saver.join(10)  # the file is written off the worker thread
    return t


def test_supported_pids_are_asked_once_and_remembered_across_a_restart(tmp_path: Path) -> None:
    memory = tmp_path / "state" / "supported_pids.json"
    diag, _, sent = runtime(tmp_path, memory)
    discover(diag, sent, 1000.0)
    assert (0x7E0, b"\x01\x0d") in requests(sent)  # speed, at the ECU that supports it
    assert json.loads(memory.read_text()) == {"version": 1, "vehicle_id": "pid-car",
                                              "ecus": [{"rx_id": 0x7E8, "pids": [0x01, 0x0D]}]}
    # A restart: no bitmap is asked again; the supported PID goes out at once.
    diag2, pipeline2, sent2 = runtime(tmp_path, memory)
    diag2.on_frame(5000.0, 0x510, bytes(8))
    diag2.poll(5000.0)
    assert requests(sent2) == [(0x7E0, b"\x01\x01")]  # no bitmap: the first supported PID at once
    diag2.on_frame(5000.01, 0x7E8, b"\x06\x41\x01\x00\x00\x00\x00".ljust(8, b"\xaa"))  # MIL off, no DTCs
    assert requests(sent2)[-1] == (0x7E0, b"\x01\x0d")  # one at a time: then the speed
    diag2.on_frame(5000.02, 0x7E8, b"\x03\x41\x0d\x3c".ljust(8, b"\xaa"))
    assert pipeline2.state.values[vss.SPEED] == 60
    assert diag2.counts["supported_pids_remembered"] == 1


@pytest.mark.parametrize(("content", "reason"), [
    (b"{not json", "invalid field"),
    (json.dumps({"version": 1, "vehicle_id": "pid-car", "ecus": [{"rx_id": 0x7E8, "pids": [0x0D, 300]}]}).encode(),
     "invalid field"),  # a PID out of range
    (json.dumps({"version": 1, "vehicle_id": "pid-car", "ecus": [{"rx_id": 0x123, "pids": [0x0D]}]}).encode(),
     "invalid field"),  # not an OBD response id
    (json.dumps({"version": 1, "vehicle_id": "pid-car", "ecus": [{"rx_id": "2024", "pids": ["13"]}]}).encode(),
     "invalid field"),  # strings are not numbers
    (json.dumps({"version": 1, "vehicle_id": "pid-car", "ecus": [], "extra": 1}).encode(), "invalid field"),
    (b" " * (MAX_FILE_BYTES + 1), f"larger than {MAX_FILE_BYTES} bytes"),
    (json.dumps({"version": 1, "vehicle_id": "other-car", "ecus": [{"rx_id": 0x7E8, "pids": [0x0D]}]}).encode(),
     "of vehicle 'other-car'"),
])
def test_a_corrupt_oversized_or_foreign_memory_is_ignored_with_a_warning_and_discovery_runs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, reason: str) -> None:
    memory = tmp_path / "supported_pids.json"
    memory.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        diag, _, sent = runtime(tmp_path, memory)
    assert reason in caplog.text and str(memory) in caplog.text
    discover(diag, sent, 1000.0)  # asks the bitmap again, and then remembers the new answer
    assert load_supported(memory, "pid-car") == {0x7E8: {0x01, 0x0D}}
