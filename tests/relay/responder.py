"""TEST STAND-IN for the agent's command handler (issue 7), until the agent drives these tests:
verifies each command's signature with the vehicle's key, answers `accepted` then `completed`
(or `rejected` with a reason), and for a `reply` "later" sends the car's confirmation message.
It is not the agent and proves nothing about the agent; it proves the relay's half of the protocol."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import paho.mqtt.client as mqtt

from relay.signing import verify_command


class StandInCar:
    def __init__(self, host: str, port: int, vehicle_id: str, key: bytes) -> None:
        self.vehicle_id = vehicle_id
        self.key = key
        self.received: list[tuple[str, dict[str, Any], bool]] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                  client_id=f"standin-{uuid.uuid4().hex[:8]}")
        self.client.on_connect = lambda c, *a: c.subscribe(f"carfriend/v1/{vehicle_id}/cmd/+", 1)
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        if not self.ready.wait(10):
            raise RuntimeError("stand-in car could not subscribe")

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        name = msg.topic.rsplit("/", 1)[1]
        payload = json.loads(msg.payload)
        ok = verify_command(self.key, self.vehicle_id, name, payload)
        self.received.append((name, payload, ok))
        topic = f"{msg.topic}/result"
        if not ok:
            self._result(client, topic, payload.get("id"), "rejected", "bad signature")
            return
        self._result(client, topic, payload["id"], "accepted")
        if name == "reply" and payload["args"].get("answer") == "later":
            self._confirm(client, "OK, I'll start charging at 11:00 p.m.")
        self._result(client, topic, payload["id"], "completed")

    def _result(self, client: mqtt.Client, topic: str, cid: Any, status: str,
                reason: str | None = None) -> None:
        ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        client.publish(topic, json.dumps({"id": cid, "status": status, "reason": reason, "ts": ts}),
                       qos=1)

    def _confirm(self, client: mqtt.Client, text: str) -> None:
        now = time.time()
        client.publish(f"carfriend/v1/{self.vehicle_id}/messages", json.dumps({
            "id": str(uuid.uuid4()), "vehicle_id": self.vehicle_id,
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + "Z",
            "kind": "charge.scheduled", "severity": "info", "visibility": "private", "text": text,
            "locale": "en", "persona": "Pre-boy", "question": None, "data": {}}), qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
