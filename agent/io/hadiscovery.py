"""Publishes Home Assistant discovery configs (retained) and clears entities that went away (MQTT, a JSON file).

What was announced is remembered in the state dir, so an entity whose signal left the mapping
(or all of them, when discovery is switched off) gets the empty retained payload that removes
it from Home Assistant, also across restarts. A clear is forgotten only once the broker has
acknowledged it; until then it is sent again on every (re)connect. A config the broker has
acknowledged in this process is not sent again unless it changed (~12 kB a car: a flaky
cellular link reconnects often); each start sends them all once, in case the broker lost them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import paho.mqtt.client as mqtt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], mqtt.MQTTMessageInfo]  # (topic, payload): retained, QoS 1
MAX_FILE_BYTES = 1 << 20
Topic = Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[^#+\x00]+$")]


class Announced(BaseModel):
    """The memory file: the discovery topics this agent has published a config on."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    topics: Annotated[list[Topic], Field(max_length=10_000)]


class DiscoveryPublisher:
    """Only the worker thread calls announce() and poll()."""

    def __init__(self, path: Path, publish: Publish) -> None:
        self.path = path
        self.publish = publish
        self.clearing: dict[str, mqtt.MQTTMessageInfo] = {}  # topic -> its empty payload in flight
        self.sent: dict[str, tuple[bytes, mqtt.MQTTMessageInfo]] = {}  # topic -> config published

    def announce(self, configs: dict[str, dict[str, Any]]) -> None:
        """Publish every config, clear what was announced before and is not in `configs` now."""
        before = self._load()
        fresh = 0
        for topic, config in configs.items():
            payload = json.dumps(config, separators=(",", ":")).encode()
            last = self.sent.get(topic)
            if last is None or last[0] != payload or not last[1].is_published():
                self.sent[topic] = (payload, self.publish(topic, payload))
                fresh += 1
        for topic in sorted(before - configs.keys()):
            self.sent.pop(topic, None)
            self.clearing[topic] = self.publish(topic, b"")
            log.info("Home Assistant entity removed: %s", topic)
        for topic in configs.keys() & self.clearing.keys():
            del self.clearing[topic]  # back in the mapping: its config above replaced the clear
        if configs or self.clearing or before:
            self._save(configs.keys() | self.clearing.keys())
        if fresh:
            log.info("Home Assistant discovery: %d of %d entities announced", fresh, len(configs))

    def poll(self) -> None:
        """Forget the clears the broker has acknowledged."""
        done = [t for t, info in self.clearing.items() if info.is_published()]
        if not done:
            return
        for topic in done:
            del self.clearing[topic]
        self._save(self._load() - set(done))

    def _load(self) -> set[str]:
        try:
            if self.path.stat().st_size > MAX_FILE_BYTES:
                raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
            return set(Announced.model_validate_json(self.path.read_bytes()).topics)
        except FileNotFoundError:
            return set()
        except (OSError, ValueError, ValidationError) as exc:
            log.warning("%s: unreadable (%s): entities announced before cannot be removed from Home "
                        "Assistant automatically (delete them there)", self.path, str(exc).splitlines()[0])
            return set()

    def _save(self, topics: set[str]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(Announced(topics=sorted(topics)).model_dump_json() + "\n", encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("%s: cannot remember the announced Home Assistant entities: %s", self.path, exc)
