"""CAN FD: the agent on a saturated bus of 64-byte frames, 500 kbit/s arbitration, 2 Mbit/s data (IO, temp files).

Nearly every frame carries new values (cell voltages, power), so nearly every frame of a mapped
message is decoded and the masked-repeat shortcut hardly applies: about the hardest load a CAN
FD bus can put on the agent.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import can
import cantools

from agent.cli.replay import replay
from agent.core.pipeline import Pipeline
from agent.io.fastbus import read_batch
from agent.profile.config import load_config
from agent.profile.vehicle import load_vehicle
from benchmarks.live import MeasurementError

ROOT = Path(__file__).resolve().parents[1]
FD_DBC = ROOT / "dbc" / "carfriend_ev_fd.dbc"
FD_CONFIG = ROOT / "config" / "vehicles" / "carfriend-ev-fd.toml"
ARBITRATION_BPS = 500_000
DATA_BPS = 2_000_000


def frame_bits(payload: int = 64) -> tuple[int, int]:
    """(bits at the arbitration rate, bits at the data rate) of a base-format CAN FD frame with
    bit rate switching, without dynamic stuff bits (ISO 11898-1:2015): the shortest it can be.

    Arbitration rate: SOF, 11-bit id, RRS, IDE, FDF, res, BRS (17), then CRC delimiter, ACK,
    ACK delimiter, EOF (7) and the interframe space (3): 30. Data rate: ESI, DLC (4), the payload,
    the stuff count (4), CRC-17 or CRC-21 (over 16 bytes) and its fixed stuff bits (one per 4).
    """
    crc = 21 if payload > 16 else 17
    fixed_stuff = -(-(4 + crc) // 4)
    return 17 + 13, 1 + 4 + 8 * payload + 4 + crc + fixed_stuff


def saturated_fps(payload: int = 64, arbitration_bps: int = ARBITRATION_BPS, data_bps: int = DATA_BPS) -> float:
    """Frames a second on a bus that carries nothing but back-to-back frames of this payload."""
    nominal, data = frame_bits(payload)
    return 1.0 / (nominal / arbitration_bps + data / data_bps)


def traffic(n: int, seed: int = 6) -> list[tuple[float, int, bytes]]:
    """n frames of the FD DBC's three 64-byte messages, every one with new values."""
    db = cantools.database.load_file(str(FD_DBC))
    rng = random.Random(seed)
    step = 1.0 / saturated_fps()
    out: list[tuple[float, int, bytes]] = []
    t = 1_800_000_000.0
    while len(out) < n:
        cells = {f"Cell_V_{k:02d}": round(rng.uniform(3.2, 4.1), 3) for k in range(1, 25)}
        out.append((t, 0x310, db.encode_message("BMS_FD_Status", {
            "SOC": round(rng.uniform(5, 95), 2), "PackVoltage": round(rng.uniform(300, 400), 1),
            "PackCurrent": round(rng.uniform(-200, 200), 1), "Temp_Avg": 25, "Temp_Min": 20, "Temp_Max": 30,
            "BMS_FD_Counter": len(out) % 16, "BMS_FD_CRC": rng.randrange(65536), **cells})))
        out.append((t + step, 0x311, db.encode_message("Vehicle_FD_Status", {
            "ChargerState": "CHARGING", "PlugState": "CONNECTED", "ChargePower": round(rng.uniform(0, 150), 2),
            "TimeToComplete": rng.randint(0, 600), "ChargeLimit": 90, "Odometer": round(rng.uniform(0, 99999), 1),
            "LV_Voltage": round(rng.uniform(12, 14.5), 3), "Vehicle_FD_Counter": len(out) % 16})))
        out.append((t + 2 * step, 0x312, db.encode_message("BMS_FD_Cells", {
            "CellPage": 0, "Cell_Min_V": round(rng.uniform(3.0, 3.3), 3),
            "Cell_Max_V": round(rng.uniform(3.9, 4.1), 3)})))
        t += 3 * step
    return out[:n]


def _pipeline() -> Pipeline:
    return Pipeline(load_vehicle(load_config(FD_CONFIG, environ={})), lambda _m: None)


def pipeline_fps(frames: list[tuple[float, int, bytes]], repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        pipeline = _pipeline()
        t0 = time.perf_counter()
        pipeline.process_frames(frames)
        best = max(best, len(frames) / (time.perf_counter() - t0))
        d = pipeline.decoder
        if d.drops.total() or d.decoded < 0.95 * len(frames):
            raise MeasurementError(f"CAN FD: {d.decoded} of {len(frames)} frames decoded, drops {d.drops.as_dict()}")
    return best


def replay_fps(frames: list[tuple[float, int, bytes]], path: Path, repeat: int) -> float:
    """A candump log of FD frames (`id##1<64 bytes>`), read and decoded."""
    with path.open("w") as fh:
        for ts, fid, data in frames:
            fh.write(f"({ts:.6f}) can0 {fid:03X}##1{data.hex().upper()}\n")
    best = 0.0
    for _ in range(repeat):
        pipeline = _pipeline()
        t0 = time.perf_counter()
        replay(pipeline, path)
        best = max(best, len(frames) / (time.perf_counter() - t0))
    return best


def virtual_bus_fps(frames: list[tuple[float, int, bytes]], repeat: int) -> float:
    """FD frames queued on a virtual bus opened with fd, then the daemon's batched receive."""
    msgs = [can.Message(timestamp=ts, arbitration_id=fid, data=data, is_extended_id=False, is_fd=True,
                        bitrate_switch=True) for ts, fid, data in frames]
    best = 0.0
    for i in range(repeat):
        channel = f"bench-fd-{os.getpid()}-{i}"
        pipeline = _pipeline()
        rx = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True, fd=True)
        tx = can.Bus(interface="virtual", channel=channel, fd=True)
        try:
            for m in msgs:
                tx.send(m)
            t0 = time.perf_counter()
            got = 0
            while got < len(msgs):
                n = read_batch(rx, pipeline.process, pipeline.error_frame, 0.05, batch_s=0)
                if n == 0:
                    raise MeasurementError(f"CAN FD virtual bus: {got} of {len(msgs)} frames arrived")
                got += n
            best = max(best, got / (time.perf_counter() - t0))
        finally:
            tx.shutdown()
            rx.shutdown()
    return best
