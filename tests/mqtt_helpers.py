"""Test helpers: a real Mosquitto broker on a free loopback port, and a recording subscriber."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None)


class Mosquitto:
    """A real Mosquitto on 127.0.0.1:<port>, with its own config; stop() and start() for outages."""

    def __init__(self, extra_conf: str = "", port: int | None = None, persistence: bool = True) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (the README's test command installs it)")
        self.binary = binary
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.dir = Path(tempfile.mkdtemp(prefix="carfriend-mosquitto-"))
        listener = "" if "listener" in extra_conf else f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
        persist = f"persistence true\npersistence_location {self.dir}/\n" if persistence else ""
        # As root, Mosquitto 2 switches to the `mosquitto` user, who cannot read our 0700 temp
        # dirs (persistence, TLS files, ACL): stay root for tests.
        user = "user root\n" if os.geteuid() == 0 else ""
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(f"{user}{listener}{persist}{extra_conf}\n")
        self.log = self.dir / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Mosquitto:
        self._logfile = self.log.open("ab")
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf), "-v"], stdout=self._logfile,
                                     stderr=self._logfile)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening within 10 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if getattr(self, "_logfile", None) is not None:
            self._logfile.close()
            self._logfile = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Recorder:
    """A paho subscriber that records (topic, payload, retain) for the topics given."""

    def __init__(self, host: str, port: int, topics: Iterable[str], *, persistent: bool = False,
                 **tls: Any) -> None:
        """persistent: a fixed client id and a 1-hour session, so QoS 1 messages published while
        the recorder is disconnected (e.g. a broker restart) are delivered when it is back."""
        self.records: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()
        client_id = f"recorder-{port}-{id(self)}" if persistent else ""
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(1, 2)
        if tls:
            self.client.tls_set(**tls)
        self._topics = list(topics)
        self._subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a, **k: self._subscribed.set()
        self.client.on_message = self._on_message
        props = None
        if persistent:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        self.client.connect(host, port, clean_start=not persistent, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("recorder could not subscribe")

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe([(t, 1) for t in self._topics])

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.records.append((msg.topic, msg.payload, bool(msg.retain)))
            self._cond.notify_all()

    def payloads(self, topic_suffix: str) -> list[bytes]:
        with self._cond:
            return [p for t, p, _ in self.records if t.endswith(topic_suffix)]

    def json(self, topic_suffix: str) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.payloads(topic_suffix)]

    def wait_for(self, predicate: Any, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def make_pki(directory: Path, clients: Iterable[str]) -> Path:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate per name (CN = name),
    as <name>.crt/<name>.key in directory (P-256 keys: quick to make)."""
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
            "-subj", "/CN=carfriend test CA")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", *clients):
        cn = "127.0.0.1" if name == "server" else name
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        extra = ["-extfile", "san.ext"] if name == "server" else []
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", *extra)
    return directory


def shipped_tls_mosquitto(pki: Path, docs: Path, extra_conf: str = "") -> Mosquitto:
    """A Mosquitto running docs/mosquitto/carfriend.conf and its ACL exactly as shipped, with only
    the listener moved to a free loopback port and the paths pointed at ``pki`` (not started)."""
    broker = Mosquitto(extra_conf="listener", persistence=False)
    conf = (docs / "carfriend.conf").read_text()
    conf = conf.replace("listener 8883", f"listener {broker.port} 127.0.0.1")
    conf = conf.replace("/etc/mosquitto/carfriend", str(broker.dir))
    conf = conf.replace("persistence true\n", f"persistence true\npersistence_location {broker.dir}/\n")
    for name in ("ca.crt", "server.crt", "server.key"):
        shutil.copy(pki / name, broker.dir / name)
    shutil.copy(docs / "acl", broker.dir / "acl")
    user = "user root\n" if os.geteuid() == 0 else ""
    broker.conf.write_text(f"{user}{conf}\n{extra_conf}\n")
    return broker
