"""The `health` document end to end: the daemon on a virtual bus, a real Mosquitto, bus-off and recovery."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import can
import pytest
from frames import EV_CONFIG, car_frames
from mqtt_helpers import Mosquitto, Recorder

from agent import __version__
from agent.cli.daemon import Agent
from agent.core.health import HealthReport
from agent.profile.config import load_config

pytestmark = pytest.mark.slow
TOPIC = "carfriend/v1/carfriend-ev-0001/health"


def reports(recorder: Recorder) -> list[HealthReport]:
    return [HealthReport.model_validate_json(p) for p in recorder.payloads("/health")]


def test_health_is_published_every_interval_with_rates_drops_bus_off_and_recovery(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    channel = f"health-{time.monotonic_ns()}"
    environ = {"CARFRIEND_MQTT__HOST": mosquitto.host, "CARFRIEND_MQTT__PORT": str(mosquitto.port),
               "CARFRIEND_STORAGE__STATE_DIR": str(tmp_path), "CARFRIEND_CAN__CHANNEL": channel,
               "CARFRIEND_HEALTH__INTERVAL_S": "5"}
    recorder = Recorder(mosquitto.host, mosquitto.port, [TOPIC])
    agent = Agent(load_config(EV_CONFIG, environ=environ))
    worker = threading.Thread(target=agent.run)
    worker.start()
    tx = can.Bus(interface="virtual", channel=channel)
    started = time.monotonic()
    try:
        assert recorder.wait_for(lambda r: len(r.payloads("/health")) >= 1, timeout=15)
        assert time.monotonic() - started >= 4.5  # one interval, not at once
        for i in range(100):
            for m in car_frames(time.time() + i * 0.01, soc=60.0):
                tx.send(m)
        tx.send(can.Message(arbitration_id=0x7FF, data=b"\x00"))  # an id the mapping does not use
        tx.send(can.Message(is_error_frame=True, arbitration_id=0x004, data=bytes([0, 0x20, 0, 0, 0, 0, 0, 0])))
        tx.send(can.Message(is_error_frame=True, arbitration_id=0x040, data=bytes(8)))  # bus-off
        assert recorder.wait_for(lambda r: any(h.bus.state == "bus_off" for h in reports(r)), timeout=15)
        tx.send(can.Message(is_error_frame=True, arbitration_id=0x100, data=bytes(8)))  # restarted
        assert recorder.wait_for(lambda r: reports(r)[-1].bus.state == "active" and len(reports(r)) >= 3,
                                 timeout=15)
    finally:
        agent.request_stop()
        worker.join(20)
        tx.shutdown()
    got = reports(recorder)
    first, busy = got[0], next(h for h in got if h.bus.state == "bus_off")
    assert first.version == __version__ and first.vehicle_id == "carfriend-ev-0001"
    assert 4 <= first.interval_s <= 8 and first.uptime_s >= 4
    assert busy.frames.total >= 100 * len(car_frames(0.0, soc=60.0)) + 3
    assert busy.frames.per_s > 0 and busy.frames.decoded > 0
    assert busy.frames.dropped["unknown_id"] >= 1 and busy.frames.dropped["error_frame"] == 2
    assert busy.bus.error_frames == 2 and busy.bus.bus_off_count == 1 and busy.bus.interface == "virtual"
    assert got[-1].bus.error_frames == 3 and got[-1].bus.state == "active"
    assert busy.outbox.depth >= 0 and busy.polls.answered is None and busy.polls.timed_out is None
    assert busy.process.rss_bytes is not None and busy.process.rss_bytes > 10_000_000
    assert 0 <= busy.process.cpu_pct < 400
    late = Recorder(mosquitto.host, mosquitto.port, [TOPIC])  # retained: the last one waits for a new reader
    try:
        assert late.wait_for(lambda r: len(r.payloads("/health")) == 1, timeout=5)
        assert late.records[0][2] and HealthReport.model_validate_json(late.records[0][1]) == got[-1]
    finally:
        late.close()


def test_health_can_be_switched_off(mosquitto: Mosquitto, tmp_path: Path) -> None:
    channel = f"health-off-{time.monotonic_ns()}"
    environ = {"CARFRIEND_MQTT__HOST": mosquitto.host, "CARFRIEND_MQTT__PORT": str(mosquitto.port),
               "CARFRIEND_STORAGE__STATE_DIR": str(tmp_path), "CARFRIEND_CAN__CHANNEL": channel,
               "CARFRIEND_HEALTH__INTERVAL_S": "5", "CARFRIEND_HEALTH__ENABLED": "false"}
    recorder = Recorder(mosquitto.host, mosquitto.port, [TOPIC, "carfriend/v1/+/status"])
    agent = Agent(load_config(EV_CONFIG, environ=environ))
    worker = threading.Thread(target=agent.run)
    worker.start()
    try:
        assert recorder.wait_for(lambda r: b"online" in r.payloads("/status"), timeout=15)
        time.sleep(7)
        assert recorder.payloads("/health") == []
    finally:
        agent.request_stop()
        worker.join(20)
