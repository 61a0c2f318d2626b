"""Live input: python-can's virtual bus, slcan over a pty, and the daemon under paced load (IO, threads).

The paced run drives the real `Agent` (daemon.py's receive loop, outbox, courier, paho) at a
fixed frame rate and reads the CPU time of every thread but the sender's from /proc.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any

import can
import psutil

from agent.core.pipeline import Pipeline
from agent.core.settings import AgentConfig
from agent.io.slcan import ChunkedSlcanBus
from benchmarks.core import new_pipeline
from benchmarks.traffic import Traffic

Frames = list[tuple[float, int, bytes]]


def _messages(frames: Frames) -> list[can.Message]:
    return [can.Message(timestamp=ts, arbitration_id=fid, data=data, is_extended_id=fid > 0x7FF)
            for ts, fid, data in frames]


class MeasurementError(RuntimeError):
    """A figure that cannot be measured as it says (e.g. frames lost on the way): no number."""


def receive(bus: can.BusABC, pipeline: Pipeline, n: int, timeout: float = 0.2) -> tuple[int, float]:
    """The daemon's loop (Agent._read_once): recv one frame, process it; n frames or a silence.

    Returns the frames received and the perf_counter time right after the last one was
    processed, so a rate never includes the silence that ended the loop.
    """
    process, got = pipeline.process, 0
    t_last = time.perf_counter()
    while got < n:
        msg = bus.recv(timeout)
        if msg is None:
            break
        if not msg.is_error_frame and not msg.is_remote_frame:
            process(msg.timestamp, msg.arbitration_id, bytes(msg.data))
        got += 1
        t_last = time.perf_counter()
    return got, t_last


def rate(name: str, got: int, n: int, t0: float, t_last: float) -> float:
    """Frames per second from the first recv to the last frame processed, or MeasurementError."""
    if got < n:
        raise MeasurementError(f"{name}: {got} of {n} frames arrived before {n - got} went missing "
                               "(a silence ended the run): no figure")
    if t_last <= t0:
        raise MeasurementError(f"{name}: no time passed between the first and the last frame: no figure")
    return got / (t_last - t0)


def virtual_fps(traffic: Traffic, config: AgentConfig, repeat: int) -> float:
    """Frames queued on a virtual bus first, then received and processed: receive path alone."""
    msgs = _messages(traffic.frames)
    best = 0.0
    for i in range(repeat):
        channel = f"bench-virtual-{os.getpid()}-{i}"
        pipeline = new_pipeline(config)
        rx = can.Bus(interface="virtual", channel=channel, preserve_timestamps=True,
                     can_filters=pipeline.vehicle.can_filters())
        tx = can.Bus(interface="virtual", channel=channel)
        # python-can filters this bus in software: recv() consumes every frame but returns only
        # the mapped ones. The figure is input frames consumed per second, up to the last mapped one.
        mapped = sum(1 for m in msgs if m.arbitration_id in pipeline.decoder.plans)
        last = max(i for i, m in enumerate(msgs) if m.arbitration_id in pipeline.decoder.plans) + 1
        try:
            for m in msgs:
                tx.send(m)
            t0 = time.perf_counter()
            got, t_last = receive(rx, pipeline, mapped, timeout=0.05)
            best = max(best, rate("virtual bus", got, mapped, t0, t_last) * last / mapped)
        finally:
            tx.shutdown()
            rx.shutdown()
    return best


def slcan_lines(frames: Frames) -> bytes:
    out = []
    for _ts, fid, data in frames:
        head = f"T{fid:08X}" if fid > 0x7FF else f"t{fid:03X}"
        out.append(f"{head}{len(data)}{data.hex().upper()}\r")
    return "".join(out).encode()


class _PtyAdapter:
    """The adapter end of a pty: answers nothing, streams the given slcan bytes when started."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.tty_path = os.ttyname(self.slave)
        self._thread: threading.Thread | None = None

    def stream(self, payload: bytes) -> None:
        def run() -> None:
            view = memoryview(payload)
            with contextlib.suppress(OSError):
                while view:
                    view = view[os.write(self.master, view[:4096]):]

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def slcan_fps(traffic: Traffic, config: AgentConfig, make_bus: Callable[[str], can.BusABC], repeat: int,
              n: int) -> float:
    """Frames/s received and processed over an slcan link on a pty (writer never the bottleneck)."""
    frames = traffic.frames[:n]
    payload = slcan_lines(frames)
    best = 0.0
    for _ in range(repeat):
        adapter = _PtyAdapter()
        bus = make_bus(adapter.tty_path)
        pipeline = new_pipeline(config)
        try:
            _drain_input(adapter.master)  # the bus's own set-up commands
            adapter.stream(payload)
            t0 = time.perf_counter()
            got, t_last = receive(bus, pipeline, len(frames), timeout=0.5)
            best = max(best, rate("slcan", got, len(frames), t0, t_last))
        finally:
            bus.shutdown()
            adapter.close()
    return best


def _drain_input(fd: int) -> None:
    os.set_blocking(fd, False)
    with contextlib.suppress(BlockingIOError, OSError):
        while os.read(fd, 4096):
            pass
    os.set_blocking(fd, True)


def python_can_slcan(path: str) -> can.BusABC:
    return can.Bus(interface="slcan", channel=path, sleep_after_open=0)


def chunked_slcan(path: str) -> can.BusABC:
    return ChunkedSlcanBus(channel=path)


class Broker:
    """A throw-away Mosquitto on 127.0.0.1 (no persistence) for the hand-off latency run."""

    def __init__(self) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.dir = Path(tempfile.mkdtemp(prefix="carfriend-bench-mqtt-"))
        user = "user root\n" if os.geteuid() == 0 else ""
        (self.dir / "m.conf").write_text(f"{user}listener {self.port} 127.0.0.1\nallow_anonymous true\n")
        self.proc = subprocess.Popen([binary, "-c", str(self.dir / "m.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def paced_agent(traffic: Traffic, config: AgentConfig, fps: float, seconds: float,
                broker_port: int | None, trigger_every_s: float = 0.05) -> dict[str, Any]:
    """Run the daemon's Agent on a virtual bus fed at `fps`; CPU of all but the sender thread,
    and frame -> client.publish() latency of dtc.new messages triggered every trigger_every_s."""
    from agent.cli.daemon import (
        Agent,  # imported late: the lead owns it; only its public API is used
    )

    state_dir = Path(tempfile.mkdtemp(prefix="carfriend-bench-state-"))
    channel = f"bench-paced-{os.getpid()}"
    mqtt = config.mqtt.model_copy(update={"host": "127.0.0.1" if broker_port else None,
                                          "port": broker_port or 1883})
    config = config.model_copy(update={
        "can": config.can.model_copy(update={"interface": "virtual", "channel": channel}),
        "mqtt": mqtt, "storage": config.storage.model_copy(update={"state_dir": state_dir}),
        # every triggered dtc.new must become a message to be timed: no daily cap here
        "messages": config.messages.model_copy(update={"daily_cap": None})})
    agent = Agent(config)
    latencies: list[float] = []

    def start_hook() -> None:
        if agent.uplink is None:
            return
        client = agent.uplink.client
        publish = client.publish

        def timed_publish(topic: str, payload: Any = None, qos: int = 0, retain: bool = False,
                          properties: Any = None) -> Any:
            if topic.endswith("/messages"):
                latencies.append(time.time() - agent.pipeline.state.now)
            return publish(topic, payload, qos, retain, properties)

        client.publish = timed_publish  # type: ignore[method-assign]

    original_start = agent.start

    def start() -> None:
        original_start()
        start_hook()

    agent.start = start  # type: ignore[method-assign]
    worker = threading.Thread(target=agent.run, name="agent-worker")
    worker.start()
    tx = can.Bus(interface="virtual", channel=channel)
    try:
        if agent.uplink is not None and not agent.uplink.connected.wait(10):
            raise RuntimeError("agent did not connect to the benchmark broker")
        time.sleep(0.3)
        result = _pace(tx, traffic, fps, seconds, trigger_every_s, agent)
    finally:
        agent.request_stop()
        worker.join(15)
        tx.shutdown()
        shutil.rmtree(state_dir, ignore_errors=True)
    result["latencies_s"] = latencies
    return result


def _pace(tx: can.BusABC, traffic: Traffic, fps: float, seconds: float, trigger_every_s: float,
          agent: Any) -> dict[str, Any]:
    dtc = traffic.database.get_message_by_name("DTC_Broadcast")
    proc = psutil.Process()
    me = threading.get_native_id()

    def cpu_others() -> float:
        return sum(t.user_time + t.system_time for t in proc.threads() if t.id != me)

    frames = traffic.frames
    n_total = int(fps * seconds)
    cpu0, t0 = cpu_others(), time.monotonic()
    frames0 = agent.pipeline.decoder.frames
    sent, code, next_trigger = 0, 0x0100, t0 + trigger_every_s
    mapped, passed = agent.vehicle.plans, 0  # frames the bus's filters let through
    send = tx.send
    while sent < n_total:
        now = time.monotonic()
        due = min(n_total, int((now - t0) * fps) + 1)
        while sent < due:
            _ts, fid, data = frames[sent % len(frames)]
            wall = time.time()
            if now >= next_trigger:
                next_trigger += trigger_every_s
                code += 1
                fid, data = dtc.frame_id, dtc.encode({"DTC_Code": code, "DTC_Status": "ACTIVE",
                                                      "DTC_Index": 0, "DTC_Count": 1})
            send(can.Message(timestamp=wall, arbitration_id=fid, data=data, is_extended_id=fid > 0x7FF))
            sent += 1
            passed += fid in mapped
        time.sleep(0.001)
    elapsed = time.monotonic() - t0
    time.sleep(0.3)  # the worker catches up
    cpu = cpu_others() - cpu0
    received = agent.pipeline.decoder.frames - frames0
    return {"sent": sent, "passed_filters": passed, "received": received, "elapsed_s": elapsed, "cpu_s": cpu,
            "achieved_fps": sent / elapsed}
