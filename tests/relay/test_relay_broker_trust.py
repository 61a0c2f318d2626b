"""The broker half of the trust boundary, through Mosquitto running docs/mosquitto as shipped
(mutual TLS, one certificate per car, the ACL): the relay joins it with its own certificate, a
car's certificate can neither steal the relay's traffic through a share group nor take over the
relay's or another car's client id."""

from __future__ import annotations

import glob
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from mqtt_helpers import Mosquitto, shipped_tls_mosquitto
from relay_testkit import (
    ROOT,
    cert_car,
    count_rows,
    persona_message,
    populate,
    tls_relay_config,
    wait_until,
)
from sqlalchemy import select

from agent.core.errors import ConfigError
from relay.models import Command, Message
from relay.server import Relay

# The relay on one database: these tests are about the browser, the agent or the broker.
pytestmark = [pytest.mark.slow, pytest.mark.backends("sqlite")]


class Listener:
    """A paho client with a certificate that records what it receives and how often it was
    disconnected (to see takeovers)."""

    def __init__(self, broker: Mosquitto, pki: Path, cert: str, client_id: str,
                 persistent: bool = False) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.received: list[tuple[str, bytes]] = []
        self.disconnects = 0
        self.subacks: list[list[str]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        self.client.tls_set(ca_certs=str(pki / "ca.crt"), certfile=str(pki / f"{cert}.crt"),
                            keyfile=str(pki / f"{cert}.key"))
        self.client.reconnect_delay_set(1, 1)
        self.client.on_message = lambda c, u, m: self.received.append((m.topic, m.payload))
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.subacks.append(
            [str(code) for code in codes])
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600 if persistent else 0
        self.client.connect(broker.host, broker.port, clean_start=not persistent, properties=props)
        self.client.loop_start()

    def _on_disconnect(self, *_args: object) -> None:
        self.disconnects += 1

    def subscribe(self, topic: str) -> None:
        before = len(self.subacks)
        self.client.subscribe(topic, qos=1)
        wait_until(lambda: len(self.subacks) > before, 10, f"SUBACK for {topic}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_the_relay_joins_the_mtls_listener_with_its_certificate(tls_relay: Relay,
                                                                tls_broker: Mosquitto,
                                                                pki: Path) -> None:
    # One connection per certificate: the broker gives each the certificate's CN as client id.
    cmd_listener = Listener(tls_broker, pki, "car-a", f"car-a-{uuid.uuid4().hex[:6]}")
    try:
        msg = persona_message("car-a", "battery.low")
        cmd_listener.client.publish("carfriend/v1/car-a/messages", json.dumps(msg),
                                    qos=1).wait_for_publish(10)
        wait_until(lambda: count_rows(tls_relay, Message, msg_id=msg["id"]) == 1, 15,
                   "car-a's message stored through the mTLS listener")
        # The ACL's `user carfriend-relay` lines apply: the relay may send car-a a command.
        cmd_listener.subscribe("carfriend/v1/car-a/cmd/+")
        info = tls_relay.ingest.publish("carfriend/v1/car-a/cmd/ping", b'{"id": "c1"}')
        info.wait_for_publish(10)
        wait_until(lambda: cmd_listener.received, 10, "the relay's command delivered to car-a")
    finally:
        cmd_listener.close()


def test_a_missing_client_key_is_a_config_error_naming_the_file(tmp_path: Path,
                                                                tls_broker: Mosquitto,
                                                                pki: Path) -> None:
    config = tls_relay_config(tmp_path, tls_broker, pki,
                              mqtt={"key_file": str(tmp_path / "nope.key")})
    with pytest.raises(ConfigError, match=r"\[mqtt\] key_file: .*nope.key: no such file"):
        Relay(config)


def test_a_car_certificate_cannot_join_the_relays_share_group(tls_relay: Relay,
                                                             tls_broker: Mosquitto,
                                                             pki: Path) -> None:
    """Mosquitto 2.0's ACL file never checks subscriptions (acl_file grants every SUBSCRIBE and
    filters on delivery), so a car may subscribe to $share/<relay group>/...: the relay must not
    depend on a share group there. Three other cars in the group get nothing of car-a's,
    and the relay stores all of car-a's messages."""
    group = tls_relay.config.mqtt.share_group
    thieves = [Listener(tls_broker, pki, cert, f"thief-{cert}")
               for cert in ("car-b", "car-pub", "car-stranger")]
    car = cert_car(tls_broker, pki, "car-a")
    try:
        for thief in thieves:
            for leaf in ("messages", "state", "fleet"):
                thief.subscribe(f"$share/{group}/carfriend/v1/+/{leaf}")
        sent = [car.message("car-a", "battery.low", ts=time.time() - 600 + i)["id"]
                for i in range(30)]
        wait_until(lambda: count_rows(tls_relay, Message, vehicle_id="car-a") == 30, 20,
                   "all 30 of car-a's messages stored")
        time.sleep(0.5)
        with tls_relay.ctx.sessions() as s:
            stored = set(s.scalars(select(Message.msg_id).where(Message.vehicle_id == "car-a")))
        assert stored == set(sent)
        assert all(not t.received for t in thieves)
    finally:
        car.close()
        for thief in thieves:
            thief.close()


def test_a_car_cannot_take_over_the_relays_client_id(tls_relay: Relay, tls_broker: Mosquitto,
                                                     pki: Path) -> None:
    relay_ids = {tls_relay.config.mqtt.client_id, "carfriend-relay"}
    takers = [Listener(tls_broker, pki, "car-b", cid, persistent=True) for cid in relay_ids]
    car = cert_car(tls_broker, pki, "car-a")
    try:
        time.sleep(2.0)  # a takeover would have kicked the relay off by now, and again after
        for i in range(20):
            car.message("car-a", "battery.low", ts=time.time() - 600 + i)
        wait_until(lambda: count_rows(tls_relay, Message, vehicle_id="car-a") == 20, 20,
                   "all 20 messages stored while car-b tries the relay's client id")
        assert tls_relay.ingest.connects == 1, "the relay was disconnected by a takeover"
        assert count_rows(tls_relay, Command) == 0
    finally:
        car.close()
        for t in takers:
            t.close()


def test_a_car_cannot_take_over_another_cars_client_id(tls_broker: Mosquitto, pki: Path) -> None:
    """car-a connects with the id the agent uses by default (carfriend-<vehicle id>) and a Last
    Will; car-b's certificate connecting with that id must not kick it off nor fire the Will."""
    watcher = Listener(tls_broker, pki, "carfriend-relay", "watcher")
    watcher.subscribe("carfriend/v1/car-a/status")
    victim = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="carfriend-car-a",
                         protocol=mqtt.MQTTv5)
    victim.tls_set(ca_certs=str(pki / "ca.crt"), certfile=str(pki / "car-a.crt"),
                   keyfile=str(pki / "car-a.key"))
    victim.will_set("carfriend/v1/car-a/status", "offline", qos=1, retain=True)
    kicked: list[object] = []
    victim.on_disconnect = lambda *a: kicked.append(a)
    victim.connect(tls_broker.host, tls_broker.port)
    victim.loop_start()
    try:
        wait_until(victim.is_connected, 10, "car-a connected")
        victim.publish("carfriend/v1/car-a/status", "online", qos=1, retain=True).wait_for_publish(5)
        taker = Listener(tls_broker, pki, "car-b", "carfriend-car-a")
        time.sleep(1.5)
        taker.close()
        assert kicked == [], "car-b's certificate kicked car-a off"
        assert b"offline" not in [p for _t, p in watcher.received]
    finally:
        victim.loop_stop()
        victim.disconnect()
        watcher.close()


def test_the_shipped_acl_still_confines_each_car_to_its_own_topics(tls_relay: Relay,
                                                                  tls_broker: Mosquitto,
                                                                  pki: Path) -> None:
    spy = Listener(tls_broker, pki, "car-b", "spy")
    spy.subscribe("carfriend/v1/car-a/#")
    forger = cert_car(tls_broker, pki, "car-b")
    car = cert_car(tls_broker, pki, "car-a")
    try:
        forged = persona_message("car-a", "battery.critical")
        forger.publish("carfriend/v1/car-a/messages", json.dumps(forged))
        real = car.message("car-a", "battery.low")
        wait_until(lambda: count_rows(tls_relay, Message, msg_id=real["id"]) == 1, 15,
                   "car-a's own message")
        time.sleep(0.5)
        assert count_rows(tls_relay, Message, msg_id=forged["id"]) == 0
        assert spy.received == []
    finally:
        spy.close()
        forger.close()
        car.close()


@pytest.fixture
def dynsec_broker(pki: Path) -> Iterator[Mosquitto]:
    """The shipped listener with the dynamic-security plugin instead of the ACL file, its
    example configuration (docs/mosquitto/dynamic-security.json) given one role per test car."""
    plugin = next(iter(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so")), None)
    if plugin is None:
        pytest.skip("Mosquitto's dynamic-security plugin is not installed")
    broker = shipped_tls_mosquitto(pki, ROOT / "docs" / "mosquitto")
    example = json.loads((ROOT / "docs/mosquitto/dynamic-security.json").read_text())
    template = "carfriend-ev-0001"
    car_client = next(c for c in example["clients"] if c["username"] == template)
    car_role = next(r for r in example["roles"] if r["rolename"] == f"car-{template}")
    for car in ("car-a", "car-b", "car-pub", "car-stranger"):
        example["clients"].append(json.loads(json.dumps(car_client).replace(template, car)))
        example["roles"].append(json.loads(json.dumps(car_role).replace(template, car)))
    (broker.dir / "dynamic-security.json").write_text(json.dumps(example))
    conf = broker.conf.read_text().replace(
        f"acl_file {broker.dir}/acl",
        f"plugin {plugin}\nplugin_opt_config_file {broker.dir}/dynamic-security.json")
    assert "plugin_opt_config_file" in conf
    broker.conf.write_text(conf)
    broker.start()
    yield broker
    broker.close()


def test_with_dynamic_security_a_share_group_can_be_kept_for_the_relay(
        tmp_path: Path, dynsec_broker: Mosquitto, pki: Path) -> None:
    """Unlike the ACL file, the dynamic-security plugin checks SUBSCRIBE, $share/<group>/ prefix
    included: with one role per car, the relay may use shared subscriptions safely."""
    relay = Relay(tls_relay_config(tmp_path, dynsec_broker, pki,
                                   mqtt={"shared_subscriptions": True}), live_poll_s=1.0)
    populate(relay)
    relay.start()
    thieves = [Listener(dynsec_broker, pki, cert, f"thief-{cert}")
               for cert in ("car-b", "car-pub", "car-stranger")]
    car = cert_car(dynsec_broker, pki, "car-a")
    try:
        assert relay.ingest.connected.wait(30)
        for thief in thieves:
            thief.subscribe("$share/carfriend-relay/carfriend/v1/+/messages")
            assert thief.subacks[-1] == ["Not authorized"]
        for i in range(30):
            car.message("car-a", "battery.low", ts=time.time() - 600 + i)
        wait_until(lambda: count_rows(relay, Message, vehicle_id="car-a") == 30, 20,
                   "all 30 of car-a's messages stored through the share group")
        assert all(not t.received for t in thieves)
    finally:
        car.close()
        for thief in thieves:
            thief.close()
        relay.stop()
