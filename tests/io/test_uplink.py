"""The MQTT link: MQTT 5 by default, falling back to 3.1.1 with a broker that only speaks 3.1.1."""

from __future__ import annotations

import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from frames import EV_CONFIG

from agent.cli.demo import EmbeddedBroker
from agent.io.uplink import PahoUplink
from agent.profile.config import load_config


def test_mqtt5_falls_back_to_311_on_a_311_only_broker(tmp_path: Any) -> None:
    broker = EmbeddedBroker().start()  # amqtt: MQTT 3.1.1 only, closes MQTT 5 connections
    got: list[bytes] = []
    seen = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    sub.on_message = lambda c, u, m: (got.append(m.payload), seen.set())
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("carfriend/v1/+/messages", 1)
    sub.loop_start()
    config = load_config(EV_CONFIG, environ={"CARFRIEND_MQTT__HOST": "127.0.0.1",
                                             "CARFRIEND_MQTT__PORT": str(broker.port),
                                             "CARFRIEND_MQTT__RECONNECT_MAX_S": "2"})
    assert config.mqtt.protocol == "5"
    uplink = PahoUplink(config)
    uplink.start()
    try:
        assert uplink.connected.wait(30), "never connected"
        assert uplink.protocol == "3.1.1"
        uplink.publish("messages", b'{"id": "x"}').wait_for_publish(5)
        assert seen.wait(5) and got == [b'{"id": "x"}']
    finally:
        uplink.stop(2)
        sub.loop_stop()
        broker.stop()


def test_mqtt5_is_kept_with_a_broker_that_speaks_it(mosquitto: Any) -> None:
    config = load_config(EV_CONFIG, environ={"CARFRIEND_MQTT__HOST": mosquitto.host,
                                             "CARFRIEND_MQTT__PORT": str(mosquitto.port)})
    uplink = PahoUplink(config)
    uplink.start()
    try:
        assert uplink.connected.wait(10) and uplink.protocol == "5"
    finally:
        uplink.stop(2)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_retained_commands_are_ignored_and_a_failing_handler_does_not_end_paho(mosquitto: Any, protocol: str) -> None:
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    topic = "carfriend/v1/carfriend-ev-0001/cmd/ping"
    pub.publish(topic, b"kept by the broker", qos=1, retain=True).wait_for_publish(5)
    got: list[bytes] = []
    arrived = threading.Event()

    def handler(_topic: str, payload: bytes) -> None:
        got.append(payload)
        arrived.set()
        if payload == b"first":
            raise RuntimeError("a handler bug")

    config = load_config(EV_CONFIG, environ={"CARFRIEND_MQTT__HOST": mosquitto.host, "CARFRIEND_MQTT__PORT":
                                             str(mosquitto.port), "CARFRIEND_MQTT__PROTOCOL": f"\"{protocol}\""})
    uplink = PahoUplink(config, on_command=handler)
    uplink.start()
    try:
        assert uplink.connected.wait(10)
        deadline = time.monotonic() + 10
        while uplink.retained_commands < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert uplink.retained_commands == 1 and got == []
        for payload in (b"first", b"second"):
            pub.publish(topic, payload, qos=1).wait_for_publish(5)
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got == [b"first", b"second"] and uplink.unreadable_commands == 1
    finally:
        uplink.stop(2)
        pub.loop_stop()
        pub.disconnect()
