"""The daemon's loop on a real virtual bus: reload keeps state and counters; bus loss is survived;
a CAN link that is down is one waiting state, not a flapping log."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import can
import pytest
from frames import EV_CONFIG, car_frames

from agent.cli.daemon import Agent, waiting_text
from agent.core import vss
from agent.io.sdnotify import SystemdNotifier
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


class Link:
    """The CAN link's up/down state as the agent sees it (on a machine: IFF_UP in sysfs)."""

    def __init__(self, up: bool) -> None:
        self.up = up
        self.checks = 0

    def __call__(self, _config: object) -> bool:
        self.checks += 1
        return self.up


def notify_socket(tmp_path: Path) -> tuple[socket.socket, SystemdNotifier]:
    """systemd's end of NOTIFY_SOCKET (a real datagram socket) and the agent's notifier."""
    path = str(tmp_path / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(path)
    listener.setblocking(False)
    return listener, SystemdNotifier({"NOTIFY_SOCKET": path})


def statuses(listener: socket.socket) -> list[str]:
    """Every STATUS= sent so far, in order (READY=1 with its STATUS= included)."""
    out = []
    while True:
        try:
            fields = listener.recv(65536).decode().split("\n")
        except BlockingIOError:
            return out
        out += [f.removeprefix("STATUS=") for f in fields if f.startswith("STATUS=")]


def bus_lines(caplog: pytest.LogCaptureFixture, channel: str) -> list[str]:
    """The log lines about the bus (those naming its channel, but for the one "ready" line)."""
    return [m for m in (r.getMessage() for r in caplog.records) if channel in m and " ready: " not in m]


def start_agent(tmp_path: Path, channel: str, link: Link) -> tuple[Agent, threading.Thread, socket.socket]:
    env = {"CARFRIEND_CAN__CHANNEL": channel, "CARFRIEND_STORAGE__STATE_DIR": str(tmp_path),
           "CARFRIEND_CAN__RECONNECT_S": "0.02"}  # 60 retries in ~1.2 s (2 minutes at the default 2 s)
    listener, notifier = notify_socket(tmp_path)
    agent = Agent(load_config(EV_CONFIG, environ=env), notifier=notifier, link_check=link)
    worker = threading.Thread(target=agent.run)
    worker.start()
    return agent, worker, listener


def test_a_link_down_at_start_is_one_waiting_line_then_one_up_line_and_frames_flow(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.cli.daemon")
    channel = f"daemon-down-{time.monotonic_ns()}"
    link = Link(up=False)
    agent, worker, listener = start_agent(tmp_path, channel, link)
    tx = can.Bus(interface="virtual", channel=channel)
    try:
        assert wait(lambda: link.checks >= 60)
        assert agent.bus is None  # not opened while the link is down
        assert bus_lines(caplog, channel) == [waiting_text(channel)]
        while_down = statuses(listener)
        link.up = True
        assert wait(lambda: agent.bus is not None)
        assert wait(lambda: agent.pipeline.state.values.get(vss.SOC) == 60.0 or _send(tx))
    finally:
        agent.request_stop()
        worker.join(15)
        tx.shutdown()
        listener.close()
    assert bus_lines(caplog, channel) == [waiting_text(channel), f"CAN bus virtual {channel} is up"]
    # READY=1 came with the waiting state, and every STATUS= until the link was up kept it.
    assert len(while_down) >= 2 and all(s.startswith(waiting_text(channel)) for s in while_down), while_down


def test_a_link_going_down_while_reading_is_one_waiting_line_not_lost_and_back_at_every_retry(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent.cli.daemon")
    channel = f"daemon-godown-{time.monotonic_ns()}"
    link = Link(up=True)
    agent, worker, listener = start_agent(tmp_path, channel, link)
    tx = can.Bus(interface="virtual", channel=channel)
    try:
        assert wait(lambda: agent.bus is not None)
        link.up = False
        agent.bus.shutdown()  # what `ip link set can0 down` does to the socket: recv fails
        checks = link.checks
        assert wait(lambda: link.checks >= checks + 60)
        assert agent.bus is None
        link.up = True
        assert wait(lambda: agent.pipeline.state.values.get(vss.SOC) == 60.0 or _send(tx))
    finally:
        agent.request_stop()
        worker.join(15)
        tx.shutdown()
        listener.close()
    assert bus_lines(caplog, channel) == [waiting_text(channel), f"CAN bus virtual {channel} is up"]
