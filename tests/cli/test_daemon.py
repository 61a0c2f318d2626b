"""The daemon's loop on a real virtual bus: reload keeps state and counters; bus loss is survived."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import can
from frames import EV_CONFIG, car_frames

from agent.cli.daemon import Agent
from agent.core import vss
from agent.profile.config import load_config


def wait(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_sighup_reload_keeps_state_counters_and_reopens_the_bus(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    channel = f"daemon-test-{time.monotonic_ns()}"
    monkeypatch.setenv("CARFRIEND_CAN__CHANNEL", channel)
    monkeypatch.setenv("CARFRIEND_STORAGE__STATE_DIR", str(tmp_path))
    agent = Agent(load_config(EV_CONFIG), config_path=EV_CONFIG)
    worker = threading.Thread(target=agent.run)
    worker.start()
    tx = can.Bus(interface="virtual", channel=channel)
    try:
        assert wait(lambda: agent.bus is not None)
        for i in range(20):
            for m in car_frames(time.time() + i * 0.001, soc=55.0):
                tx.send(m)
        assert wait(lambda: agent.pipeline.decoder.frames >= 100)
        before_bus = agent.bus
        agent.request_reload()  # what SIGHUP does
        assert wait(lambda: agent.bus is not None and agent.bus is not before_bus)
        assert agent.pipeline.decoder.frames >= 100  # counters run on
        assert agent.pipeline.state.values[vss.SOC] == 55.0  # state kept
        for m in car_frames(time.time(), soc=54.0):
            tx.send(m)
        assert wait(lambda: agent.pipeline.state.values[vss.SOC] == 54.0)  # reading the new bus
    finally:
        agent.request_stop()
        worker.join(15)
        tx.shutdown()


def test_bus_lost_then_back_keeps_running(tmp_path: Path) -> None:
    channel = f"daemon-loss-{time.monotonic_ns()}"
    env = {"CARFRIEND_CAN__CHANNEL": channel, "CARFRIEND_STORAGE__STATE_DIR": str(tmp_path),
           "CARFRIEND_CAN__RECONNECT_S": "0.2"}
    agent = Agent(load_config(EV_CONFIG, environ=env))
    worker = threading.Thread(target=agent.run)
    worker.start()
    tx = can.Bus(interface="virtual", channel=channel)
    try:
        assert wait(lambda: agent.bus is not None)
        agent.bus.shutdown()  # the adapter goes away under the worker's feet
        assert wait(lambda: agent.bus is not None and agent.pipeline.state.values.get(vss.SOC) == 60.0
                    or _send(tx))
    finally:
        agent.request_stop()
        worker.join(15)
        tx.shutdown()
    assert not worker.is_alive()


def _send(tx: can.BusABC) -> bool:
    for m in car_frames(time.time(), soc=60.0):
        tx.send(m)
    return False


def test_the_periodic_counters_say_where_the_drops_come_from(tmp_path: Path) -> None:
    channel = f"daemon-drops-{time.monotonic_ns()}"
    env = {"CARFRIEND_CAN__CHANNEL": channel, "CARFRIEND_STORAGE__STATE_DIR": str(tmp_path)}
    agent = Agent(load_config(EV_CONFIG, environ=env))
    worker = threading.Thread(target=agent.run)
    worker.start()
    tx = can.Bus(interface="virtual", channel=channel)
    try:
        assert wait(lambda: agent.bus is not None)
        for i in range(5):
            tx.send(can.Message(arbitration_id=0x7DF, data=bytes(8), is_extended_id=False))
            for m in car_frames(time.time() + i, soc=50.0, lv_v=3.0 + i * 0.1):  # a 12 V rail at 3 V: implausible
                tx.send(m)
        assert wait(lambda: agent.pipeline.decoder.drops.implausible >= 5)
        line = agent._counters_line()
    finally:
        agent.request_stop()
        worker.join(15)
        tx.shutdown()
    assert "unknown_id=5" in line and "implausible=5" in line
    where = line.split("where[", 1)[1]
    assert "unknown_id: 0x7DF 5;" in where and "implausible: LV_System.LV_Voltage 5" in where
