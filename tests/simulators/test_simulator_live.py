"""The simulator live on real python-can buses: the virtual bus and slcan over a pseudo-terminal."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import can
import pytest

import simulators
from simulators.frames import crc8_j1850, load_car_dbc

DB = load_car_dbc()
CHARGING_CAR = """
description = "Plugged in at a 7.4 kW wallbox"
start = "2026-11-21T18:30:00+09:00"
timezone = "Asia/Tokyo"
[car]
soc_pct = 50.0
charge_limit_pct = 90
[[phases]]
kind = "charge"
power_kw = 7.4
duration_s = 36000
"""


@pytest.fixture
def channel() -> str:
    return f"carfriend-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def charging_car(tmp_path: Path) -> Path:
    path = tmp_path / "charging.toml"
    path.write_text(CHARGING_CAR)
    return path


@pytest.fixture
def buses(channel: str) -> Iterator[tuple[can.BusABC, can.BusABC]]:
    """(the car's side, the agent's side) of one virtual bus."""
    car = simulators.open_bus("virtual", channel)
    agent = can.Bus(interface="virtual", channel=channel)
    yield car, agent
    car.shutdown()
    agent.shutdown()


def wait_for(bus: can.BusABC, name: str, check: Callable[[dict[str, Any]], bool],
             timeout: float = 10.0) -> dict[str, Any]:
    message = DB.get_message_by_name(name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = bus.recv(timeout=0.2)
        if msg is not None and msg.arbitration_id == message.frame_id and len(msg.data) == message.length:
            values = message.decode(bytes(msg.data))
            if check(values):
                return values
    raise AssertionError(f"no {name} frame matching the check within {timeout} s")


def send(bus: can.BusABC, name: str, **values: Any) -> None:
    message = DB.get_message_by_name(name)
    bus.send(can.Message(arbitration_id=message.frame_id, is_extended_id=message.is_extended_frame,
                         data=message.encode(values)))


def test_frames_arrive_on_the_virtual_bus_at_their_ids_and_cycle_times(buses: tuple[can.BusABC, can.BusABC]) -> None:
    car, agent = buses
    scenario = simulators.load_scenario("daily-commute")
    stats = simulators.run_live(car, scenario, speed=1.0, duration_s=1.2)
    assert stats.finished
    received: dict[int, list[float]] = {}
    while (msg := agent.recv(timeout=0.1)) is not None:
        received.setdefault(msg.arbitration_id, []).append(msg.timestamp)
    periodic = {m.frame_id: m.cycle_time / 1000 for m in DB.messages if m.cycle_time}
    assert set(received) == set(periodic)
    start = scenario.start.timestamp()
    for frame_id, stamps in received.items():
        assert start <= stamps[0] < start + 0.02  # the receiver sees simulated time
        gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        assert all(abs(g - periodic[frame_id]) < 1e-4 for g in gaps), hex(frame_id)
    assert len(received[0x0A0]) == 60  # 20 ms for 1.2 s


def test_the_car_reacts_to_command_frames(buses: tuple[can.BusABC, can.BusABC], charging_car: Path) -> None:
    car, agent = buses
    sim = simulators.Simulator(car, charging_car, speed=60).start()
    try:
        wait_for(agent, "Charger_Status", lambda v: str(v["ChargerState"]) == "CHARGING")
        send(agent, "TCU_ClimateCmd", ClimateRequest="ON", TargetTempRequest=25.0)
        wait_for(agent, "Climate_Status", lambda v: str(v["ClimateActive"]) == "ON" and v["TargetTemp"] == 25.0)
        send(agent, "TCU_ChargeLimitCmd", ChargeLimitRequest=70)
        wait_for(agent, "Charger_Status", lambda v: v["ChargeLimit"] == 70)
        send(agent, "TCU_ChargeCmd", ChargeRequest="STOP")
        wait_for(agent, "Charger_Status", lambda v: str(v["ChargerState"]) == "STOPPED")
        send(agent, "TCU_ChargeCmd", ChargeRequest="START")
        wait_for(agent, "Charger_Status", lambda v: str(v["ChargerState"]) == "CHARGING")
        send(agent, "TCU_ChargeScheduleCmd", ScheduleRequest="ONCE", StartMinutesRequest=23 * 60)
        wait_for(agent, "Charger_Schedule", lambda v: str(v["ScheduleMode"]) == "ONCE" and v["ScheduledStart"] == 1380)
        held = wait_for(agent, "Charger_Status", lambda v: str(v["ChargerState"]) == "SCHEDULED")
        assert held["TimeToComplete"] == 4095  # not charging: not available
    finally:
        sim.stop()
    assert sim.stats is not None and sim.stats.commands == 5


def test_the_simulator_thread_reports_the_end_of_the_scenario(buses: tuple[can.BusABC, can.BusABC]) -> None:
    car, _ = buses
    sim = simulators.Simulator(car, "service-due", speed=2000).start()
    assert sim.wait(timeout=20)
    assert sim.error is None and sim.stats is not None and sim.stats.finished


def test_a_stop_event_ends_a_live_run_early(buses: tuple[can.BusABC, can.BusABC]) -> None:
    car, _ = buses
    sim = simulators.Simulator(car, "overnight-charge", speed=10).start()
    time.sleep(0.3)
    sim.stop()
    assert sim.done.is_set()
    assert sim.stats is not None and not sim.stats.finished


def test_frames_and_commands_cross_an_slcan_link_on_a_pseudo_terminal(charging_car: Path) -> None:
    adapter = simulators.SlcanPtyBus()
    agent = can.Bus(interface="slcan", channel=adapter.tty_path, sleep_after_open=0)
    sim = simulators.Simulator(adapter, charging_car, speed=60).start()
    try:
        bms = DB.get_message_by_name("BMS_Status")
        deadline = time.monotonic() + 10
        while (msg := agent.recv(timeout=0.5)) is None or msg.arbitration_id != bms.frame_id:
            assert time.monotonic() < deadline, "no BMS_Status over slcan"
        assert msg.data[7] == crc8_j1850(bytes(msg.data[:7]))
        assert 49.0 < bms.decode(bytes(msg.data))["SOC"] < 60.0
        dtc = DB.get_message_by_name("DTC_Broadcast")
        wait_for(agent, "DTC_Broadcast", lambda v: True)  # the 29-bit id makes it across
        assert dtc.is_extended_frame
        send(agent, "TCU_ClimateCmd", ClimateRequest="ON", TargetTempRequest=21.0)
        wait_for(agent, "Climate_Status", lambda v: str(v["ClimateActive"]) == "ON")
    finally:
        sim.stop()
        agent.shutdown()
        adapter.shutdown()
    assert sim.stats is not None and sim.stats.commands == 1


LOW_SOC_DRIVE = """
description = "A drive that takes the SOC under 20 % within a few simulated minutes"
start = "2026-11-21T18:30:00+09:00"
timezone = "Asia/Tokyo"
[car]
soc_pct = 20.5
[[phases]]
kind = "drive"
duration_s = 900
speed_kmh = 60
"""


def test_the_agent_hears_the_simulated_car_through_slcan_and_pyserial(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    scenario = tmp_path / "low-soc.toml"
    scenario.write_text(LOW_SOC_DRIVE)
    adapter = simulators.SlcanPtyBus()
    config = (root / "config" / "vehicles" / "carfriend-ev.toml").read_text()
    config = config.replace('interface = "virtual"', 'interface = "slcan"')
    config = config.replace('channel = "carfriend"', f'channel = "{adapter.tty_path}"\n'
                            'options = { sleep_after_open = 0 }')
    config = config.replace('"../../dbc/carfriend_ev.dbc"', f'"{root / "dbc" / "carfriend_ev.dbc"}"')
    config += f'\n[storage]\nstate_dir = "{tmp_path / "state"}"\n'
    (tmp_path / "agent.toml").write_text(config)
    agent = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(tmp_path / "agent.toml")],
                             cwd=root, stderr=subprocess.PIPE, text=True)
    sim = simulators.Simulator(adapter, scenario, speed=20).start()
    seen: list[str] = []
    watchdog = threading.Timer(60, agent.kill)  # a silent, hung agent ends the read loop
    watchdog.start()
    try:
        assert agent.stderr is not None
        for line in agent.stderr:
            seen.append(line)
            if "message battery.low" in line:
                break
    finally:
        watchdog.cancel()
        agent.terminate()
        agent.wait(timeout=10)
        sim.stop()
        adapter.shutdown()
    assert any("message battery.low" in line for line in seen), "".join(seen[-20:])
