"""The MQTT link to the cloud relay, with paho-mqtt 2.x (network IO on paho's thread)."""

from __future__ import annotations

import contextlib
import json
import logging
import random
import ssl
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.core.errors import UplinkError
from agent.core.model import PersonaMessage
from agent.core.settings import AgentConfig, MqttConfig
from agent.profile.config import credential, read_secret

log = logging.getLogger(__name__)

CommandHandler = Callable[[str, bytes], None]
SESSION_EXPIRY_S = 7 * 24 * 3600
CONNACK_TIMEOUT_S = 10.0  # the broker keeps our subscriptions and queued commands a week


class PahoUplink:
    """Publishes messages/state/status under carfriend/v1/<vehicle_id>/ and receives commands.

    Never blocks the caller on the network: connect_async + paho's own thread, which also
    reconnects with backoff. ``presence`` adds the retained online/offline status and Last Will.
    """

    def __init__(self, config: AgentConfig, *, presence: bool = True,
                 on_command: CommandHandler | None = None, client_suffix: str = "") -> None:
        self.config = config
        self.mqtt: MqttConfig = config.mqtt
        if not self.mqtt.host:
            raise UplinkError("[mqtt] host: no broker configured")
        self.host: str = self.mqtt.host
        self.presence = presence
        self.on_command = on_command
        self.retained_commands = 0  # ignored: see _on_message
        self.unreadable_commands = 0
        self.connected = threading.Event()
        self.reconnected = threading.Event()  # the worker sends a full state snapshot then
        self._stopping = False
        self.status_topic = config.topic("status")
        self.client_id = (self.mqtt.client_id or f"carfriend-{config.vehicle.id}") + client_suffix
        # The car's own session persists (queued commands wait for it); a tool's (replay,
        # flush, command) is clean, so it leaves nothing behind on the broker.
        self.persistent = presence
        self.protocol = self.mqtt.protocol
        self._connack_seen = False
        self._v5_failures = 0
        self.client = self._build_client()

    def _build_client(self) -> mqtt.Client:
        v5 = self.protocol == "5"
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else not self.persistent,
        )
        self.client = client
        self._jitter_backoff()
        client.max_inflight_messages_set(20)
        self._configure_auth()
        if self.presence:
            client.will_set(self.status_topic, "offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _fall_back_to_311(self) -> None:
        """The broker closes MQTT 5 connections before answering: speak 3.1.1 from now on."""
        old = self.client
        old.loop_stop()
        sock = old.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()  # the silent MQTT 5 connection
        log.warning("MQTT broker %s:%s does not speak MQTT 5: falling back to 3.1.1",
                    self.mqtt.host, self.mqtt.port)
        self.protocol = "3.1.1"
        new = self._build_client()
        # keep what callers attached (the courier's on_publish, a tool's on_message/on_subscribe)
        new.on_publish, new.on_subscribe, new.on_message = old.on_publish, old.on_subscribe, old.on_message
        self.start()

    def _jitter_backoff(self) -> None:
        max_s = int(max(1, self.mqtt.reconnect_max_s))
        self.client.reconnect_delay_set(min_delay=random.randint(1, min(3, max_s)), max_delay=max_s)

    def _configure_auth(self) -> None:
        m = self.mqtt
        password, _ = read_secret("mqtt-password", m.password.get_secret_value() if m.password else None,
                                  m.password_file)
        if m.username or password:
            self.client.username_pw_set(m.username, password)
        if m.tls is None:
            return
        for label, path in (("ca_file", m.tls.ca_file), ("cert_file", m.tls.cert_file)):
            if path is not None and not path.is_file():
                raise UplinkError(f"[mqtt.tls] {label}: {path}: no such file")
        key = credential("mqtt-client-key") or m.tls.key_file
        if key is not None and not key.is_file():
            raise UplinkError(f"[mqtt.tls] key_file: {key}: no such file")
        try:
            self.client.tls_set(ca_certs=str(m.tls.ca_file) if m.tls.ca_file else None,
                                certfile=str(m.tls.cert_file) if m.tls.cert_file else None,
                                keyfile=str(key) if key else None, cert_reqs=ssl.CERT_REQUIRED)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise UplinkError(f"[mqtt.tls]: cannot use the TLS files: {exc}") from None
        if m.tls.insecure_skip_verify:
            self.client.tls_insecure_set(True)

    def start(self) -> None:
        props = None
        v5 = self.protocol == "5"
        if v5 and self.persistent:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
        clean_start: Any = (not self.persistent) if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY
        try:
            self.client.connect_async(self.host, self.mqtt.port, keepalive=self.mqtt.keepalive_s,
                                      clean_start=clean_start, properties=props)
        except (OSError, ValueError) as exc:
            raise UplinkError(f"[mqtt] {self.mqtt.host}:{self.mqtt.port}: {exc}") from None
        self.client.loop_start()
        if v5:
            timer = threading.Timer(CONNACK_TIMEOUT_S, self._check_connack)
            timer.daemon = True
            timer.start()

    def _check_connack(self) -> None:
        """Connected at TCP level but no CONNACK: some 3.1.1-only brokers just stay silent."""
        if self.protocol == "5" and not self._stopping and not self.connected.is_set() \
                and self.client.socket() is not None:
            self._fall_back_to_311()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT broker %s:%s refused the connection: %s", self.mqtt.host, self.mqtt.port, reason)
            if self.protocol == "5" and "protocol" in str(reason).lower():
                threading.Thread(target=self._fall_back_to_311, daemon=True).start()
            return
        self._connack_seen, self._v5_failures = True, 0
        log.log(logging.INFO if self.presence else logging.DEBUG, "MQTT connected to %s:%s",
                self.mqtt.host, self.mqtt.port)
        if self.presence:
            client.publish(self.status_topic, "online", qos=1, retain=True)
        if self.on_command is not None:
            client.subscribe(self.config.topic("cmd/+"), qos=1)
        self.reconnected.set()
        self.connected.set()

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not self._connack_seen and self.protocol == "5" and not self._stopping:
            # Closed before any CONNACK (not refused at TCP level: that is on_connect_fail).
            self._v5_failures += 1
            if self._v5_failures == 2:
                threading.Thread(target=self._fall_back_to_311, daemon=True).start()
        self._connack_seen = False
        if self.connected.is_set() and not self._stopping:
            log.warning("MQTT disconnected (%s); reconnecting in the background", reason)
            self._jitter_backoff()
        self.connected.clear()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        """paho's thread: queue a command, nothing else; never raises (paho's loop would end)."""
        if self.on_command is None:
            return
        try:
            if msg.retain:
                # Set only for what the broker kept from before this subscription: a command is
                # fresh or nothing (a retained one would come again at every reconnect).
                self.retained_commands += 1
                log.warning("retained command on %.100s ignored; %d so far", msg.topic, self.retained_commands)
                return
            self.on_command(msg.topic, bytes(msg.payload))
        except Exception as exc:  # noqa: BLE001 - e.g. a topic that is not UTF-8: counted, dropped
            self.unreadable_commands += 1
            log.warning("command message dropped: %s: %s", type(exc).__name__, exc)

    def publish(self, leaf: str, payload: str | bytes, *, retain: bool = False, qos: int | None = None) -> mqtt.MQTTMessageInfo:
        return self.client.publish(self.config.topic(leaf), payload, qos=self.mqtt.qos if qos is None else qos,
                                   retain=retain)

    def publish_message(self, msg: PersonaMessage) -> mqtt.MQTTMessageInfo:
        return self.publish("messages", msg.model_dump_json())

    def publish_state(self, doc: dict[str, Any], *, retain: bool = True) -> mqtt.MQTTMessageInfo:
        return self.publish("state", json.dumps(doc, separators=(",", ":")), retain=retain)

    def stop(self, timeout: float = 5.0) -> None:
        """Say offline (when we own the presence), then disconnect cleanly."""
        self._stopping = True
        if self.presence and self.connected.is_set():
            info = self.client.publish(self.status_topic, "offline", qos=1, retain=True)
            _wait(info, timeout)
        self.client.disconnect()
        self.client.loop_stop()


def _wait(info: mqtt.MQTTMessageInfo, timeout: float) -> bool:
    try:
        info.wait_for_publish(timeout)
    except (RuntimeError, ValueError):
        return False
    return info.is_published()
