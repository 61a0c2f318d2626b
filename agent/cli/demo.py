"""`carfriend demo`: a simulated car, the agent and an embedded broker; prints what a subscriber sees (IO)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import socket
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from agent.cli.daemon import Agent
from agent.cli.simulate import simulated_config, start_simulator
from agent.core.settings import AgentConfig
from agent.io.sources import open_bus
from agent.profile.config import load_config

log = logging.getLogger(__name__)
REFERENCE_CONFIG = Path(__file__).resolve().parents[2] / "config" / "vehicles" / "carfriend-ev.toml"


class EmbeddedBroker:
    """amqtt's MQTT 3.1.1 broker on 127.0.0.1, in a thread: no broker to install for the demo."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._broker: Any = None
        self._thread = threading.Thread(target=self._serve, name="demo-broker", daemon=True)

    def start(self) -> EmbeddedBroker:
        for name in ("amqtt", "transitions", "asyncio"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("the embedded MQTT broker did not start")
        return self

    def _serve(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from amqtt.broker import Broker

            asyncio.set_event_loop(self._loop)
            config = {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                      "sys_interval": 0, "auth": {"allow-anonymous": True, "plugins": ["auth_anonymous"]},
                      "topic-check": {"enabled": False}}
            self._broker = Broker(config, loop=self._loop)
            self._loop.run_until_complete(self._broker.start())
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        if self._broker is not None:
            fut = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
            with contextlib.suppress(Exception):  # best effort at exit
                fut.result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)


class Printer:
    """An MQTT subscriber printing what a fleet operator's client receives."""

    def __init__(self, port: int, topic: str) -> None:
        self.count = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        self._last_state = 0.0
        self.signals: dict[str, Any] = {}  # deltas applied on top of the last full snapshot

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        leaf = msg.topic.rsplit("/", 1)[-1]
        if leaf == "messages":
            m = json.loads(msg.payload)
            self.count += 1
            data = f"  data={json.dumps(m['data'], ensure_ascii=False)}" if m["data"] else ""
            print(f"\n{msg.topic}  [{m['ts']}] {m['kind']} ({m['severity']})\n  {m['text']}{data}", flush=True)
        elif leaf == "status":
            print(f"{msg.topic}  {msg.payload.decode()}", flush=True)
        elif leaf == "state":
            doc = json.loads(msg.payload)
            if doc.get("full"):
                self.signals = {}
            self.signals.update(doc["signals"])
            if time.monotonic() - self._last_state <= 5:
                return
            self._last_state = time.monotonic()
            sig = self.signals
            soc = sig.get("Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed", {}).get("value")
            lv = sig.get("Vehicle.LowVoltageBattery.CurrentVoltage", {}).get("value")
            print(f"{msg.topic}  SOC {soc} %, 12 V {lv} V, {len(sig)} signals", flush=True)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


BROADCAST_SPEED = 600.0
# The simulated ECUs answer on simulated time, the agent's request timeouts run on it too: at
# 600x a 2 s timeout is 3 ms of real time and half the answers would come late.
POLLING_SPEED = 60.0


def demo_speed(config: AgentConfig, requested: float | None) -> float:
    """The speed asked for, else the fastest at which the car's polling still works as in a car."""
    if requested is not None:
        return requested
    diag = config.diagnostics
    polls = diag is not None and diag.enabled and (diag.standard_pids or bool(diag.request) or
                                                   diag.signalset is not None)
    return POLLING_SPEED if polls and not config.can.listen_only else BROADCAST_SPEED


def cmd_demo(args: argparse.Namespace) -> int:
    broker = EmbeddedBroker().start()
    state_dir = tempfile.mkdtemp(prefix="carfriend-demo-")
    config = load_config(args.config or REFERENCE_CONFIG)
    args.speed = demo_speed(config, args.speed)
    mqtt_cfg = config.mqtt.model_copy(update={"host": "127.0.0.1", "port": broker.port, "protocol": "3.1.1",
                                              "state_min_interval_s": 2.0})
    config = simulated_config(config.model_copy(update={
        "mqtt": mqtt_cfg, "storage": config.storage.model_copy(update={"state_dir": Path(state_dir)})}))
    print(f"carfriend demo: scenario {args.scenario} at {args.speed:g}x, broker 127.0.0.1:{broker.port}; "
          f"subscribed to {config.mqtt.topic_prefix}/{config.vehicle.id}/#  (Ctrl-C to stop)", flush=True)
    printer = Printer(broker.port, f"{config.mqtt.topic_prefix}/{config.vehicle.id}/#")
    agent = Agent(config, bus_factory=lambda c, f: open_bus(c.can, f))
    worker = threading.Thread(target=agent.run, name="agent", daemon=True)
    worker.start()
    sim, sim_bus = start_simulator(config, args.scenario, args.speed)
    try:
        while not sim.wait(0.5):
            pass
        time.sleep(2.0)  # let the last messages reach the subscriber
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
    finally:
        sim.stop()
        agent.request_stop()
        worker.join(10)
        time.sleep(0.5)
        printer.stop()
        sim_bus.shutdown()
        broker.stop()
    if sim.error is not None:
        print(f"error: simulator failed: {sim.error}", file=sys.stderr)
        return 1
    print(f"\ndemo finished: {printer.count} messages received; agent counters: {agent._counters_line()}",
          flush=True)
    return 0 if printer.count else 1
