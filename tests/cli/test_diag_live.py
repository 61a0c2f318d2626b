"""Diagnostic polling live: the agent, the simulator's diagnostic ECUs and a second bus reader.

python-can virtual buses, a real Mosquitto, the real simulator; the second reader watches
every frame on the bus, so "not a single frame sent" is observed, not assumed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import can
import pytest
from mqtt_helpers import Mosquitto, Recorder

import simulators
from agent.cli.command import signed_payload
from agent.cli.daemon import Agent
from agent.commands.runner import CommandMemory, CommandRunner
from agent.core.state import VehicleState
from agent.io.guarded_bus import LISTEN_ONLY_REASON, ListenOnlyBus
from agent.io.sources import open_bus
from agent.profile.config import load_config
from agent.profile.vehicle import load_vehicle

ROOT = Path(__file__).resolve().parents[2]
OBD_CONFIG = ROOT / "config" / "vehicles" / "carfriend-ev-obd.toml"
EXPECTED = ["battery.low", "charge.started", "charge.completed", "aux_battery.low"]
AGENT_IDS = frozenset({0x7DF, *range(0x7E0, 0x7E8)})  # what only the tester sends: requests, flow control


class Watcher:
    """The second reader: every frame on the bus with the real time it was seen; optionally a candump."""

    def __init__(self, channel: str, log: Path | None = None) -> None:
        self.bus = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)
        self.seen: list[tuple[float, can.Message]] = []
        self.writer = can.Logger(str(log)) if log is not None else None
        listeners: list[Any] = [self._seen] + ([self.writer] if self.writer is not None else [])
        self.notifier = can.Notifier(self.bus, listeners)

    def _seen(self, msg: can.Message) -> None:
        self.seen.append((time.monotonic(), msg))

    def close(self) -> None:
        self.notifier.stop()
        self.bus.shutdown()

    def sent_by_agent(self) -> list[tuple[float, can.Message]]:
        return [(t, m) for t, m in self.seen if m.arbitration_id in AGENT_IDS]

    def car_frames(self) -> list[tuple[float, can.Message]]:
        return [(t, m) for t, m in self.seen if m.arbitration_id not in AGENT_IDS]


def start_agent(env: dict[str, str]) -> tuple[Agent, threading.Thread]:
    agent = Agent(load_config(OBD_CONFIG, environ=env), bus_factory=lambda c, f: open_bus(c.can, f))
    worker = threading.Thread(target=agent.run, name="agent")
    worker.start()
    deadline = time.monotonic() + 10
    while agent.bus is None:
        assert time.monotonic() < deadline, "the agent did not open its bus"
        time.sleep(0.01)
    return agent, worker


@contextmanager
def car_and_agent(env: dict[str, str], *, speed: float, duration_s: float | None = None,
                  log: Path | None = None) -> Iterator[tuple[Agent, Watcher, simulators.Simulator]]:
    """The agent (env names its channel) and the simulated diagnostics-only car on one virtual
    bus, watched by a second reader (writing a candump to log); all stopped on the way out."""
    channel = env["CARFRIEND_CAN__CHANNEL"]
    agent, worker = start_agent(env)
    watcher = Watcher(channel, log)
    car = simulators.open_bus("virtual", channel)
    sim = simulators.Simulator(car, "diagnostics-only", speed=speed, duration_s=duration_s).start()
    try:
        yield agent, watcher, sim
    finally:
        sim.stop()
        agent.request_stop()
        worker.join(15)
        watcher.close()
        car.shutdown()


@pytest.fixture
def channel() -> str:
    return f"diag-live-{time.monotonic_ns()}"


@pytest.fixture
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The diagnostics-only car run end to end once (~55 s at 60x), through a real Mosquitto.

    60x, not faster: the agent's request timeouts are on the bus's (simulated) time, and on a
    loaded machine each millisecond of scheduling delay is 60 ms of it."""
    if not (mosq := Mosquitto()).binary:
        pytest.fail("mosquitto missing")
    tmp = tmp_path_factory.mktemp("diag-session")
    broker = mosq.start()
    channel = f"diag-session-{time.monotonic_ns()}"
    env = {"CARFRIEND_CAN__CHANNEL": channel, "CARFRIEND_STORAGE__STATE_DIR": str(tmp / "state"),
           "CARFRIEND_MQTT__HOST": broker.host, "CARFRIEND_MQTT__PORT": str(broker.port)}
    recorder = Recorder(broker.host, broker.port, ["carfriend/v1/carfriend-ev-obd-0001/#"])
    try:
        with car_and_agent(env, speed=60, log=tmp / "session.log") as (agent, watcher, sim):
            assert sim.wait(300), "the simulated day did not end"
            assert recorder.wait_for(lambda r: len(r.payloads("/messages")) >= 4, timeout=20), \
                (recorder.json("/messages"), agent._counters_line())
            time.sleep(0.5)
    finally:
        recorder.close()
        broker.close()
    yield {"messages": recorder.json("/messages"), "states": recorder.json("/state"),
           "log": tmp / "session.log", "agent": agent,
           "watcher": watcher, "sim": sim, "tmp": tmp}


@pytest.mark.slow
def test_diagnostics_only_car_end_to_end_through_mosquitto(session: dict[str, Any]) -> None:
    messages = session["messages"]
    assert [m["kind"] for m in messages] == EXPECTED
    started = messages[1]
    assert started["data"]["eta_source"] == "charger" and "eta" in started["data"]
    eta = datetime.fromisoformat(started["data"]["eta"].replace("Z", "+00:00")).timestamp()
    done = datetime.fromisoformat(messages[2]["ts"].replace("Z", "+00:00")).timestamp()
    assert abs(eta - done) < 600  # the charger's estimate, within ten minutes
    states = session["states"]  # the state topic carries the polled values like broadcast ones
    assert any("Vehicle.LowVoltageBattery.CurrentVoltage" in s["signals"] for s in states)
    assert any("Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed" in s["signals"] for s in states)
    agent: Agent = session["agent"]
    assert agent.pipeline.decoder.decoded == 0  # nothing broadcast was decoded: polled values alone
    assert agent.diag is not None and agent.diag.counts["positive"] > 300
    # never a first frame on a silent bus: the car's own heartbeat came before any request
    watcher: Watcher = session["watcher"]
    first_request = watcher.sent_by_agent()[0][0]
    assert watcher.car_frames()[0][0] < first_request


@pytest.mark.slow
def test_replaying_the_candump_of_the_session_gives_the_same_messages(session: dict[str, Any]) -> None:
    env = dict(os.environ, CARFRIEND_STORAGE__STATE_DIR=str(session["tmp"] / "replay"))
    result = subprocess.run([sys.executable, "-m", "agent.cli", "replay", "--config", str(OBD_CONFIG),
                             str(session["log"])], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    replayed = [json.loads(line) for line in result.stdout.splitlines()]
    live = session["messages"]
    assert [m["kind"] for m in replayed] == EXPECTED
    for a, b in zip(live, replayed, strict=True):  # the same events at the same event times
        assert abs(datetime.fromisoformat(a["ts"][:-1]).timestamp()
                   - datetime.fromisoformat(b["ts"][:-1]).timestamp()) < 30, (a, b)
    assert "diagnostics:" in result.stderr and "responses decoded" in result.stderr


def test_listen_only_sends_not_a_single_frame_and_rejects_commands(channel: str, tmp_path: Path) -> None:
    env = {"CARFRIEND_CAN__CHANNEL": channel, "CARFRIEND_STORAGE__STATE_DIR": str(tmp_path),
           "CARFRIEND_CAN__LISTEN_ONLY": "true"}
    with car_and_agent(env, speed=20, duration_s=120) as (agent, watcher, sim):
        assert sim.wait(30)
        time.sleep(0.3)
        assert isinstance(agent.bus, ListenOnlyBus)
        with pytest.raises(can.CanOperationError, match="listen-only"):
            agent.bus.send(can.Message(arbitration_id=0x7E4, data=b"\x03\x22\x01\x01"))
    assert len(watcher.car_frames()) > 50  # the car was awake and talking all along
    assert watcher.sent_by_agent() == []  # and the agent said nothing
    assert agent.diag is not None and agent.diag.counts["sent"] == 0


def test_a_command_is_rejected_with_the_listen_only_reason(tmp_path: Path) -> None:
    config = load_config(ROOT / "config" / "vehicles" / "carfriend-ev.toml",
                         environ={"CARFRIEND_CAN__LISTEN_ONLY": "true"})
    results: list[tuple[str, ...]] = []
    memory = CommandMemory(tmp_path / "c.db")
    sent: list[can.Message] = []
    runner = CommandRunner(config, load_vehicle(config), memory, b"k" * 32, send=sent.append,
                           result=lambda *r: results.append(r), publish_state=lambda: None, say=lambda k, d: None)
    now = time.time()
    state = VehicleState()
    state.set("Vehicle.Speed", 0.0, now)
    state.set("Vehicle.Powertrain.Transmission.SelectedGear", "P", now)
    raw = json.dumps(signed_payload(b"k" * 32, config.vehicle.id, "climate.start", {"target_c": 21}, None,
                                    datetime.now(UTC))).encode()
    runner.handle(f"carfriend/v1/{config.vehicle.id}/cmd/climate.start", raw, state, now)
    memory.close()
    assert [(r[2], r[3]) for r in results] == [("rejected", LISTEN_ONLY_REASON)]
    assert sent == []


def test_a_silent_bus_gets_no_frame_and_polling_stops_when_it_goes_quiet(channel: str, tmp_path: Path) -> None:
    agent, worker = start_agent({"CARFRIEND_CAN__CHANNEL": channel, "CARFRIEND_STORAGE__STATE_DIR": str(tmp_path)})
    watcher = Watcher(channel)
    car = can.Bus(interface="virtual", channel=channel)
    try:
        time.sleep(2.0)
        assert watcher.seen == []  # 2 s of a silent bus: not a single frame from the agent
        t0 = time.time()
        for i in range(20):  # the car wakes: a heartbeat every 100 ms for 2 s
            car.send(can.Message(timestamp=t0 + i * 0.1, arbitration_id=0x510, data=b"\x10\x01" + bytes(6)))
            time.sleep(0.1)
        quiet_from = time.monotonic()
        time.sleep(5.0)
    finally:
        agent.request_stop()
        worker.join(15)
        watcher.close()
        car.shutdown()
    requests = watcher.sent_by_agent()
    assert requests, "the awake car was polled"
    assert all(t < quiet_from + 3.5 for t, _ in requests)  # stopped within quiet_after_s (3 s)
    assert agent.diag is not None and agent.diag.counts["timeout"] >= 1  # nobody answered: counted


BITMAPS = frozenset({0x00, 0x20, 0x40, 0x60, 0x80, 0xA0, 0xC0})


def requests_seen(watcher: Watcher) -> list[tuple[int, bytes]]:
    """(request id, request) of every single-frame request the agent put on the bus."""
    return [(m.arbitration_id, bytes(m.data[1:1 + m.data[0]])) for _, m in watcher.sent_by_agent()
            if m.data[0] < 0x10]  # a single frame (not a flow control)


def bitmap_requests(watcher: Watcher) -> list[tuple[int, bytes]]:
    return [(i, r) for i, r in requests_seen(watcher) if len(r) == 2 and r[0] == 0x01 and r[1] in BITMAPS]


def drive(state_dir: Path, sim_s: float = 120.0) -> tuple[Agent, Watcher]:
    """The agent on state_dir against the diagnostics-only car (driving at 60 km/h) for sim_s
    simulated seconds at 20x, watched by a second reader."""
    env = {"CARFRIEND_CAN__CHANNEL": f"diag-memory-{time.monotonic_ns()}",
           "CARFRIEND_STORAGE__STATE_DIR": str(state_dir)}
    with car_and_agent(env, speed=20, duration_s=sim_s) as (agent, watcher, sim):
        assert sim.wait(60), "the simulated drive did not end"
        time.sleep(0.3)
    assert agent.diag is not None
    if agent.diag.saver is not None:
        agent.diag.saver.join(10)  # the memory is written (or deleted) off the worker thread
    return agent, watcher


def test_a_second_run_asks_no_bitmap_yet_polls_the_standard_pids(tmp_path: Path) -> None:
    memory = tmp_path / "supported_pids.json"
    first, watched = drive(tmp_path)
    assert (0x7DF, b"\x01\x00") in bitmap_requests(watched)  # the first run asked the car
    assert json.loads(memory.read_text()) == {"version": 1, "vehicle_id": "carfriend-ev-obd-0001", "ecus": [
        {"rx_id": 0x7E8, "pids": [0x01, 0x0D, 0x20, 0x40, 0x42, 0x60, 0x80, 0xA0, 0xA6]},
        {"rx_id": 0x7EC, "pids": [0x01, 0x20, 0x40, 0x5B]}]}
    second, watched = drive(tmp_path)
    assert bitmap_requests(watched) == []  # not one bitmap on the bus
    polled = requests_seen(watched)
    for pid in (0x01, 0x0D, 0x42, 0xA6):  # the standard PIDs, each at its ECU, from the start
        assert (0x7E0, bytes([0x01, pid])) in polled, pid
    assert 40 < second.pipeline.state.values["Vehicle.Speed"] < 80  # driving at about 60 km/h
    assert 11.0 < second.pipeline.state.values["Vehicle.LowVoltageBattery.CurrentVoltage"] < 15.0
    assert second.diag is not None and second.diag.counts["supported_pids_remembered"] == 1
    assert second.diag.counts["supported_pids_forgotten"] == 0


def test_a_memory_of_another_car_is_forgotten_and_the_bitmaps_asked_again(tmp_path: Path) -> None:
    memory = tmp_path / "supported_pids.json"  # same vehicle id, but an ECU this car does not have
    memory.write_text(json.dumps({"version": 1, "vehicle_id": "carfriend-ev-obd-0001",
                                  "ecus": [{"rx_id": 0x7E9, "pids": [0x0D, 0x42]}]}))
    agent, watched = drive(tmp_path)
    polled = requests_seen(watched)
    # three requests to the remembered ECU time out (timeouts_before_backoff), then it is asked no more
    assert [r for i, r in polled if i == 0x7E1] == [b"\x01\x0d", b"\x01\x42", b"\x03"]
    assert (0x7DF, b"\x01\x00") in bitmap_requests(watched)
    assert (0x7E0, b"\x01\x0d") in polled and 40 < agent.pipeline.state.values["Vehicle.Speed"] < 80
    assert [e["rx_id"] for e in json.loads(memory.read_text())["ecus"]] == [0x7E8, 0x7EC]  # the true answer
    assert agent.diag is not None and agent.diag.counts["supported_pids_forgotten"] == 1
