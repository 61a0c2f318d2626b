"""CAN FD: 64-byte frames from candump ## logs, ASC/BLF/TRC FD records, GVRET rows, a live bus and
the simulator, decoded with a DBC of 64-byte messages through the precompiled extraction."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import can
import cantools
import pytest
from frames import START
from logfiles import write

import simulators
from agent.cli.replay import replay
from agent.core import vss
from agent.core.pipeline import Pipeline
from agent.core.settings import CanConfig
from agent.io.fastbus import read_batch
from agent.io.sources import open_bus
from agent.profile.config import load_config
from agent.profile.vehicle import load_vehicle

ROOT = Path(__file__).resolve().parents[2]
FD_DBC = ROOT / "dbc" / "carfriend_ev_fd.dbc"
FD_CONFIG = ROOT / "config" / "vehicles" / "carfriend-ev-fd.toml"
DB = cantools.database.load_file(str(FD_DBC))


def fd_traffic(seconds: int = 30, seed: int = 1) -> list[tuple[float, int, bytes]]:
    """Random but plausible 64-byte frames of every message, 10 a second each."""
    rng = random.Random(seed)
    out = []
    for i in range(seconds * 10):
        t = START + i * 0.1
        cells = {f"Cell_V_{k:02d}": round(rng.uniform(3.2, 4.1), 3) for k in range(1, 25)}
        out.append((t, 0x310, DB.encode_message("BMS_FD_Status", {
            "SOC": round(rng.uniform(5, 95), 2), "PackVoltage": round(rng.uniform(300, 400), 1),
            "PackCurrent": round(rng.uniform(-200, 200), 1), "Temp_Avg": rng.randint(0, 40),
            "Temp_Min": rng.randint(-5, 10), "Temp_Max": rng.randint(20, 45), "BMS_FD_Counter": i % 16,
            "BMS_FD_CRC": rng.randrange(65536), **cells})))
        out.append((t + 0.01, 0x311, DB.encode_message("Vehicle_FD_Status", {
            "ChargerState": rng.choice(["IDLE", "CHARGING"]), "PlugState": "CONNECTED",
            "ChargePower": round(rng.uniform(0, 150), 2), "TimeToComplete": rng.randint(0, 600),
            "ChargeLimit": rng.randint(50, 100), "Odometer": round(rng.uniform(0, 99999), 1),
            "LV_Voltage": round(rng.uniform(11.5, 14.5), 3), "Vehicle_FD_Counter": i % 16})))
        page = i % 2
        out.append((t + 0.02, 0x312, DB.encode_message("BMS_FD_Cells", {
            "CellPage": page, "Cell_Min_V": 3.2, "Cell_Max_V": round(rng.uniform(3.9, 4.1), 3)} if page == 0 else {
            "CellPage": 1, "Module_T_Min": -2.5, "Module_T_Max": round(rng.uniform(20, 40), 1)})))
    assert all(len(data) == 64 for _t, _i, data in out)
    return out


def expected_state(frames: list[tuple[float, int, bytes]]) -> dict[str, Any]:
    """What the FD profile must put in the state: cantools' decode of the last frame of each."""
    last: dict[tuple[int, int | None], bytes] = {}
    for _t, fid, data in frames:
        last[(fid, data[0] if fid == 0x312 else None)] = data
    bms = DB.decode_message(0x310, last[(0x310, None)])
    veh = DB.decode_message(0x311, last[(0x311, None)])
    cells = DB.decode_message(0x312, last[(0x312, 0)])
    return {vss.SOC: bms["SOC"], vss.PACK_VOLTAGE: bms["PackVoltage"], vss.PACK_CURRENT: -bms["PackCurrent"],
            vss.PACK_TEMP: bms["Temp_Avg"], vss.IS_CHARGING: str(veh["ChargerState"]) == "CHARGING",
            vss.CHARGE_POWER: veh["ChargePower"], vss.TIME_TO_COMPLETE: veh["TimeToComplete"] * 60,
            vss.CHARGE_LIMIT: veh["ChargeLimit"], vss.ODOMETER: veh["Odometer"], vss.AUX_VOLTAGE: veh["LV_Voltage"],
            f"{vss.TB}.CellVoltage.Max": cells["Cell_Max_V"]}


def fd_pipeline() -> Pipeline:
    vehicle = load_vehicle(load_config(FD_CONFIG, environ={}))
    assert all(plan.compiled and plan.length == 64 for plan in vehicle.plans.values())  # no cantools per frame
    return Pipeline(vehicle, lambda m: None)


def assert_state(pipeline: Pipeline, expected: dict[str, Any]) -> None:
    values = pipeline.state.values
    for path, want in expected.items():
        assert values[path] == pytest.approx(want), path
    assert pipeline.decoder.drops.total() == pipeline.decoder.drops.not_available == 0


def test_a_canfd_candump_log_of_64_byte_frames_decodes_with_a_dbc_of_64_byte_messages(tmp_path: Path) -> None:
    frames = fd_traffic()
    log = write(tmp_path / "fd.log", frames, fd=True)
    assert "##1" in log.read_text().splitlines()[0]
    pipeline = fd_pipeline()
    report = replay(pipeline, log)
    assert report.malformed_lines == 0 and pipeline.decoder.frames == len(frames)
    assert_state(pipeline, expected_state(frames))


@pytest.mark.parametrize("suffix", [".asc", ".blf", ".csv"])
def test_asc_blf_and_gvret_fd_records_decode_like_the_candump_log(tmp_path: Path, suffix: str) -> None:
    frames = fd_traffic(seconds=5)
    pipeline = fd_pipeline()
    replay(pipeline, write(tmp_path / f"fd{suffix}", frames, fd=True))
    assert pipeline.decoder.frames == len(frames)
    assert_state(pipeline, expected_state(frames))


def test_trc_fd_records_decode(tmp_path: Path) -> None:
    frames = fd_traffic(seconds=2)
    header = ";$FILEVERSION=2.1\n;$STARTTIME=46347.375\n;$COLUMNS=N,O,T,B,I,d,R,L,D\n"
    rows = [f"{n:>7} {(t - START) * 1000:13.3f} FB  1     {fid:04X} Rx -  15   {' '.join(f'{b:02X}' for b in data)}"
            for n, (t, fid, data) in enumerate(frames)]
    path = tmp_path / "fd.trc"
    path.write_text(header + "\n".join(rows) + "\n")
    pipeline = fd_pipeline()
    report = replay(pipeline, path)
    assert report.malformed_lines == 0 and pipeline.decoder.frames == len(frames)
    assert_state(pipeline, expected_state(frames))


def test_a_cut_fd_line_is_counted_not_decoded(tmp_path: Path) -> None:
    log = write(tmp_path / "fd.log", fd_traffic(seconds=1), fd=True)
    log.write_text(log.read_text()[:-20])  # the last FD frame cut: 54 bytes is no CAN FD length
    pipeline = fd_pipeline()
    assert replay(pipeline, log).malformed_lines == 1


def test_fd_frames_from_a_live_bus_opened_with_fd(tmp_path: Path) -> None:
    channel = f"fd-live-{time.monotonic_ns()}"
    rx = open_bus(CanConfig(interface="virtual", channel=channel, fd=True), None)
    tx = can.Bus(interface="virtual", channel=channel)
    pipeline = fd_pipeline()
    frames = fd_traffic(seconds=2)
    try:
        for t, fid, data in frames:
            tx.send(can.Message(timestamp=t, arbitration_id=fid, data=data, is_extended_id=False,
                                is_fd=True, bitrate_switch=True))
        n = read_batch(rx, pipeline.process, pipeline.error_frame, 1.0, batch_s=0)
    finally:
        rx.shutdown()
        tx.shutdown()
    assert n == len(frames)
    assert_state(pipeline, expected_state(frames))


def test_the_simulator_emits_fd_frames_that_replay_like_classic_ones(tmp_path: Path) -> None:
    msgs = list(simulators.frames("fault-dtc", speed=600, duration_s=900, fd=True))
    assert msgs and all(m.is_fd and m.bitrate_switch for m in msgs if not m.is_error_frame)
    classic, fd = tmp_path / "classic.log", tmp_path / "fd.log"
    simulators.write_log(classic, "fault-dtc", speed=600, duration_s=900)
    simulators.write_log(fd, "fault-dtc", speed=600, duration_s=900, fd=True)
    assert "##1" in fd.read_text() and "##" not in classic.read_text()
    states = []
    for log in (classic, fd):
        pipeline = Pipeline(load_vehicle(load_config(ROOT / "config/vehicles/carfriend-ev.toml", environ={})),
                            lambda m: None)
        replay(pipeline, log)
        states.append(pipeline.state.snapshot("x"))
    assert states[0] == states[1] and len(states[0]["signals"]) > 10
