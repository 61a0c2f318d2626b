"""The discovery publisher against a real Mosquitto: retained configs, remembered topics, clears retried until acked."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from mqtt_helpers import Mosquitto, Recorder

from agent.io.hadiscovery import DiscoveryPublisher

A, B = "homeassistant/sensor/car/a/config", "homeassistant/sensor/car/b/config"


@pytest.fixture
def client(mosquitto: Mosquitto) -> Iterator[mqtt.Client]:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect(mosquitto.host, mosquitto.port)
    c.loop_start()
    yield c
    c.loop_stop()
    c.disconnect()


def publisher(path: Path, client: mqtt.Client) -> DiscoveryPublisher:
    return DiscoveryPublisher(path, lambda topic, payload: client.publish(topic, payload, qos=1, retain=True))


def settle(pub: DiscoveryPublisher, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while pub.clearing and time.monotonic() < deadline:
        pub.poll()
        time.sleep(0.02)


def test_a_topic_no_longer_announced_is_cleared_and_then_forgotten(mosquitto: Mosquitto, client: mqtt.Client,
                                                                    tmp_path: Path) -> None:
    memory = tmp_path / "homeassistant.json"
    publisher(memory, client).announce({A: {"name": "a"}, B: {"name": "b"}})
    assert set(json.loads(memory.read_text())["topics"]) == {A, B}
    pub = publisher(memory, client)  # a restart: only the file remembers
    pub.announce({A: {"name": "a"}})
    assert set(json.loads(memory.read_text())["topics"]) == {A, B}  # B stays until the broker acked its clear
    settle(pub)
    assert json.loads(memory.read_text())["topics"] == [A]
    late = Recorder(mosquitto.host, mosquitto.port, ["homeassistant/#"])
    try:
        assert late.wait_for(lambda r: r.payloads("/a/config"), timeout=5)
        time.sleep(0.5)
        assert late.payloads("/b/config") == []  # no retained config left for B
        assert json.loads(late.payloads("/a/config")[0]) == {"name": "a"}
    finally:
        late.close()


def test_nothing_announced_and_nothing_to_announce_writes_no_file(client: mqtt.Client, tmp_path: Path) -> None:
    memory = tmp_path / "homeassistant.json"
    publisher(memory, client).announce({})
    assert not memory.exists()


@pytest.mark.parametrize("content", [b"{not json", b'{"topics": ["a/#"]}', b'{"topics": [], "x": 1}',
                                     b"[" * 200 + b"]" * 200, b" " * (2 << 20)])
def test_a_damaged_memory_file_is_reported_and_replaced(client: mqtt.Client, tmp_path: Path, content: bytes,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    memory = tmp_path / "homeassistant.json"
    memory.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        publisher(memory, client).announce({A: {"name": "a"}})
    assert "homeassistant.json: unreadable" in caplog.text
    assert json.loads(memory.read_text())["topics"] == [A]


def test_a_reconnect_sends_only_what_changed_or_was_not_acknowledged(client: mqtt.Client, tmp_path: Path) -> None:
    sent: list[str] = []

    def publish(topic: str, payload: bytes) -> mqtt.MQTTMessageInfo:
        sent.append(topic)
        return client.publish(topic, payload, qos=1, retain=True)

    pub = DiscoveryPublisher(tmp_path / "homeassistant.json", publish)
    pub.announce({A: {"name": "a"}, B: {"name": "b"}})
    for info in (i for _, i in pub.sent.values()):
        info.wait_for_publish(5)
    sent.clear()
    pub.announce({A: {"name": "a"}, B: {"name": "b"}})  # a reconnect: both acknowledged, unchanged
    assert sent == []
    pub.announce({A: {"name": "a"}, B: {"name": "B!"}})  # a reload that renamed one
    assert sent == [B]
    sent.clear()
    DiscoveryPublisher(tmp_path / "homeassistant.json", publish).announce({A: {"name": "a"}, B: {"name": "B!"}})
    assert sorted(sent) == [A, B]  # a new process sends everything once
