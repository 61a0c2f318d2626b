"""Mutual TLS with per-vehicle certificates and the documented ACL, on a real Mosquitto."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from frames import EV_CONFIG, acceptance_frames, write_log
from mqtt_helpers import Mosquitto, Recorder

ROOT = Path(__file__).resolve().parents[2]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-days", "2", "-subj", "/CN=carfriend test CA", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "carfriend-ev-0001", "other-car", "carfriend-relay"):
        cn = "127.0.0.1" if name == "server" else name
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={cn}", cwd=d)
        extra = ["-extfile", "san.ext"] if name == "server" else []
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", "2", *extra, cwd=d)
    return d


@pytest.fixture
def tls_broker(pki: Path) -> Mosquitto:
    conf = (ROOT / "docs/mosquitto/carfriend.conf").read_text()
    broker = Mosquitto(extra_conf="listener", persistence=False)
    conf = conf.replace("listener 8883", f"listener {broker.port} 127.0.0.1").replace("/etc/mosquitto/carfriend", str(pki))
    conf = conf.replace("persistence true\n", "")
    conf = ("user root\n" if os.geteuid() == 0 else "") + conf
    (pki / "acl").write_text((ROOT / "docs/mosquitto/acl").read_text())
    broker.conf.write_text(conf)
    broker.start()
    yield broker
    broker.close()


def client_for(pki: Path, name: str | None) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if name is None:
        c.tls_set(ca_certs=str(pki / "ca.crt"))
    else:
        c.tls_set(ca_certs=str(pki / "ca.crt"), certfile=str(pki / f"{name}.crt"), keyfile=str(pki / f"{name}.key"))
    return c


def test_vehicle_connects_with_its_certificate_and_is_confined_by_the_acl(pki: Path, tls_broker: Mosquitto,
                                                                          tmp_path: Path) -> None:
    relay = Recorder(tls_broker.host, tls_broker.port, ["carfriend/v1/#"], ca_certs=str(pki / "ca.crt"),
                     certfile=str(pki / "carfriend-relay.crt"), keyfile=str(pki / "carfriend-relay.key"))
    env = dict(os.environ, CARFRIEND_MQTT__HOST="127.0.0.1", CARFRIEND_MQTT__PORT=str(tls_broker.port),
               CARFRIEND_MQTT__TLS__CA_FILE=str(pki / "ca.crt"),
               CARFRIEND_MQTT__TLS__CERT_FILE=str(pki / "carfriend-ev-0001.crt"),
               CARFRIEND_MQTT__TLS__KEY_FILE=str(pki / "carfriend-ev-0001.key"),
               CARFRIEND_STORAGE__STATE_DIR=str(tmp_path / "state"), CARFRIEND_VEHICLE__OFFPEAK_WINDOW="")
    log = write_log(tmp_path / "a.log", acceptance_frames())
    result = subprocess.run([sys.executable, "-m", "agent.cli", "replay", "--config", str(EV_CONFIG), str(log),
                             "--publish"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert relay.wait_for(lambda r: len(r.payloads("carfriend-ev-0001/messages")) == 4)

    # Another vehicle's certificate: it may not publish into this car's topics, nor read them.
    other = client_for(pki, "other-car")
    got: list[bytes] = []
    other.on_message = lambda c, u, m: got.append(m.payload)
    other.connect(tls_broker.host, tls_broker.port)
    other.loop_start()
    other.subscribe("carfriend/v1/carfriend-ev-0001/#", qos=1)
    other.publish("carfriend/v1/carfriend-ev-0001/messages", json.dumps({"id": "forged"}), qos=1).wait_for_publish(5)
    other.publish("carfriend/v1/other-car/messages", json.dumps({"id": "own"}), qos=1).wait_for_publish(5)
    time.sleep(1.0)
    other.loop_stop()
    assert got == []  # retained state/status of carfriend-ev-0001 not readable either
    ids = [json.loads(p).get("id") for p in relay.payloads("/messages")]
    relay.close()
    assert "forged" not in ids and "own" in ids


def test_a_client_without_a_certificate_is_refused(pki: Path, tls_broker: Mosquitto) -> None:
    anon = client_for(pki, None)
    with pytest.raises(OSError):  # the TLS handshake fails: no client certificate
        anon.connect(tls_broker.host, tls_broker.port)
        anon.loop_start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not anon.is_connected():
            time.sleep(0.1)
        anon.loop_stop()
        if not anon.is_connected():
            raise OSError("refused")


def test_missing_tls_file_exits_1_naming_the_file(tmp_path: Path) -> None:
    env = dict(os.environ, CARFRIEND_MQTT__HOST="127.0.0.1", CARFRIEND_MQTT__TLS__CA_FILE="/nope/ca.crt",
               CARFRIEND_STORAGE__STATE_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", str(EV_CONFIG),
                             "--simulate", "demo-day"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "error: [mqtt.tls] ca_file: /nope/ca.crt: no such file" in result.stderr
