"""Relay test fixtures: an in-process relay against the real Mosquitto fixture, users, a publisher
that speaks the agent's wire format, and logged-in HTTP clients."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from mqtt_helpers import Mosquitto, free_port, make_pki, shipped_tls_mosquitto
from pg_helpers import PostgresCluster, pg_bindir

# tests/relay has no __init__.py, so its folder could shadow the project's `relay` package.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from relay.config import RelayConfig, load_config  # noqa: E402

try:
    from relay.admin import add_user, add_vehicles, grant
    from relay.server import Relay
except ImportError as exc:  # the relay extra is not installed: only the pure tests run
    print(f"tests/relay: {exc.name} missing (pip install -e '.[relay]'): relay server tests skipped")
    collect_ignore = [f"test_relay_{name}.py" for name in (
        "ingest", "web_auth", "commands", "restart", "e2e_agent", "browser", "poison", "render",
        "broker_trust", "web_trust", "fuzz", "charts", "metrics", "schema", "notify", "notify_browser", "notify_restart", "notify_parts")]
    Relay = Any  # type: ignore[misc,assignment]

PASSWORD = "correct-horse-battery"
ROOT = Path(__file__).resolve().parents[2]
# Certificates of the mTLS tests: the relay, the registered cars, and a car the relay never heard of.
CERT_NAMES = ("carfriend-relay", "car-a", "car-b", "car-pub", "car-stranger")
MESSAGE_NS = uuid.UUID("6f1d1c2e-6a53-5c3e-9f0a-2b8c7d0e4a11")


BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One throw-away PostgreSQL cluster for the session (started by the first test needing it)."""
    if pg_bindir() is None:
        pytest.fail("PostgreSQL is not installed: run the README's test command, which installs it")
    cluster = PostgresCluster().start()
    yield cluster
    cluster.close()


@pytest.fixture(scope="session")
def pg_template(pg_cluster: PostgresCluster) -> str:
    """A database migrated to the newest schema, copied for each test (faster than migrating)."""
    from relay.db import make_engine, migrate

    url = pg_cluster.create_database()
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    return url.rsplit("/", 1)[1]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test using db_url (the relay fixtures do) runs on each backend, or on those its
    `backends` marker names (the slow end-to-end ones run on one)."""
    if "db_url" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")
        metafunc.parametrize("db_url", marker.args if marker else BACKENDS, indirect=True)


@pytest.fixture
def db_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The relay's database: None for the SQLite file in tmp_path, or a fresh PostgreSQL
    database (a copy of a migrated template) dropped after the test."""
    if request.param == "sqlite":
        yield None
        return
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    url = cluster.create_database(template=request.getfixturevalue("pg_template"))
    yield url
    cluster.drop_database(url)


def on_backends(*names: str) -> pytest.MarkDecorator:
    """Run a test (or, as pytestmark, a module) on these backends only."""
    return pytest.mark.backends(*names)


def relay_config(tmp: Path, broker: Mosquitto, db_url: str | None = None,
                 **sections: dict[str, Any]) -> RelayConfig:
    """A config file in tmp pointing at the broker (and the database, when db_url is given);
    returns the loaded config."""
    raw = {"mqtt": {"host": broker.host, "port": broker.port,
                    "client_id": f"relay-{uuid.uuid4().hex[:8]}"},
           "web": {"host": "127.0.0.1", "port": free_port()},
           "ingest": {"state_history_min_interval_s": 0}}
    if db_url is not None:
        raw["database"] = {"url": db_url}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    lines = []
    for section, values in raw.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "relay.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_config(path, environ={})


def populate(relay: Relay) -> None:
    """Two owners' cars, family, a dealer and an operator (the same password for all)."""
    with relay.ctx.sessions() as s:
        add_vehicles(s, relay.config, ["car-a"], name="Pre-boy", generate_key=True)
        add_vehicles(s, relay.config, ["car-b"], name="Other car", generate_key=True)
        add_vehicles(s, relay.config, ["car-pub"], name="Public car", public_feed=True)
        for user, role, vehicle in (("alice", "owner", "car-a"), ("fay", "family", "car-a"),
                                    ("bob", "owner", "car-b"), ("dan", "dealer", "car-a"),
                                    ("olga", "operator", None)):
            add_user(s, user, PASSWORD)
            grant(s, user, role, vehicle)


@pytest.fixture(autouse=True)
def cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Still argon2id, with test-sized cost (the relay's default costs ~0.1 s per hash)."""
    try:
        from argon2 import PasswordHasher

        import relay.auth
    except ImportError:
        return  # the relay extra is not installed: no server tests run
    monkeypatch.setattr(relay.auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024,
                                                              parallelism=1))


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"), CERT_NAMES)


@pytest.fixture
def tls_broker(pki: Path) -> Iterator[Mosquitto]:
    """Mosquitto with docs/mosquitto/carfriend.conf and acl as shipped (mTLS, the ACL)."""
    broker = shipped_tls_mosquitto(pki, ROOT / "docs" / "mosquitto").start()
    yield broker
    broker.close()


def tls_relay_config(tmp: Path, broker: Mosquitto, pki: Path, db_url: str | None = None,
                     **sections: dict[str, Any]) -> RelayConfig:
    """The relay as a client of the mTLS listener, with its own certificate (CN carfriend-relay)."""
    mqtt_section = {"tls": True, "ca_file": str(pki / "ca.crt"),
                    "cert_file": str(pki / "carfriend-relay.crt"),
                    "key_file": str(pki / "carfriend-relay.key"), **sections.pop("mqtt", {})}
    return relay_config(tmp, broker, db_url, mqtt=mqtt_section, **sections)


@pytest.fixture
def tls_relay(tmp_path: Path, tls_broker: Mosquitto, pki: Path,
              db_url: str | None) -> Iterator[Relay]:
    """The relay through the shipped mTLS listener and ACL, populated like ``relay``."""
    r = Relay(tls_relay_config(tmp_path, tls_broker, pki, db_url=db_url), live_poll_s=1.0)
    populate(r)
    r.start()
    assert r.ingest.connected.wait(30), "relay did not connect to the mTLS broker"
    yield r
    r.stop()


def cert_car(broker: Mosquitto, pki: Path, cert: str, client_id: str | None = None) -> CarPublisher:
    return CarPublisher(broker, client_id=client_id, pki=pki, cert=cert)


@pytest.fixture
def relay(tmp_path: Path, mosquitto: Mosquitto, db_url: str | None) -> Iterator[Relay]:
    """A populated relay on SQLite and on PostgreSQL (the test runs once on each)."""
    r = Relay(relay_config(tmp_path, mosquitto, db_url), live_poll_s=1.0)
    populate(r)
    r.start()
    assert r.ingest.connected.wait(30), "relay did not connect to the broker"
    yield r
    r.stop()


def base_url(relay: Relay) -> str:
    return f"http://127.0.0.1:{relay.config.web.port}"


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" (?:content|value)="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def login(relay: Relay, username: str, password: str = PASSWORD) -> httpx.Client:
    client = httpx.Client(base_url=base_url(relay), timeout=10)
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"csrf": token, "username": username, "password": password})
    assert r.status_code == 303, r.text
    return client


class CarPublisher:
    """Publishes what an agent publishes (test stand-in until the agent drives these tests);
    with ``pki`` and ``cert`` it connects through the mTLS listener as that certificate."""

    def __init__(self, broker: Mosquitto, client_id: str | None = None, pki: Path | None = None,
                 cert: str | None = None) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"car-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        if pki is not None and cert is not None:
            self.client.tls_set(ca_certs=str(pki / "ca.crt"), certfile=str(pki / f"{cert}.crt"),
                                keyfile=str(pki / f"{cert}.key"))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str | dict[str, Any], retain: bool = False,
                wait: bool = True) -> None:
        body = json.dumps(payload) if isinstance(payload, dict) else payload
        info = self.client.publish(topic, body, qos=1, retain=retain)
        if wait:
            info.wait_for_publish(10)

    def message(self, vehicle_id: str, kind: str = "battery.low", **fields: Any) -> dict[str, Any]:
        msg = persona_message(vehicle_id, kind, **fields)
        self.publish(f"carfriend/v1/{vehicle_id}/messages", msg)
        return msg

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def persona_message(vehicle_id: str, kind: str = "battery.low", ts: float | None = None,
                    **fields: Any) -> dict[str, Any]:
    """A message shaped like agent.model.PersonaMessage (same uuid5 id scheme)."""
    ts = time.time() if ts is None else ts
    msg = {"id": str(uuid.uuid5(MESSAGE_NS, f"{vehicle_id}/{kind}/{round(ts * 1e6)}")),
           "vehicle_id": vehicle_id,
           "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z",
           "kind": kind, "severity": "warning", "visibility": "private",
           "text": f"{kind} from {vehicle_id}", "locale": "en", "persona": "Pre-boy",
           "question": None, "data": {}}
    msg.update(fields)
    return msg


@pytest.fixture
def car(mosquitto: Mosquitto) -> Iterator[CarPublisher]:
    pub = CarPublisher(mosquitto)
    yield pub
    pub.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class SseReader:
    """Reads a server-sent event stream in a thread; events as (event, data) tuples."""

    def __init__(self, client: httpx.Client, path: str) -> None:
        self.events: list[tuple[str, str]] = []
        self._client = client
        self._path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        event, data = "message", []
        with self._client.stream("GET", self._path, timeout=None) as r:
            for line in r.iter_lines():
                if self._stop.is_set():
                    return
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data.append(line[6:])
                elif line == "" and data:
                    self.events.append((event, "\n".join(data)))
                    event, data = "message", []

    def of(self, event: str) -> list[str]:
        return [d for e, d in list(self.events) if e == event]

    def close(self) -> None:
        self._stop.set()


def count_rows(relay: Relay, model: type, **where: Any) -> int:
    """Rows of a table, optionally where column == value for each keyword."""
    from sqlalchemy import func, select

    with relay.ctx.sessions() as s:
        q = select(func.count()).select_from(model)
        for k, v in where.items():
            q = q.where(getattr(model, k) == v)
        return int(s.scalar(q) or 0)


def pages_render(relay: Relay) -> None:
    """/fleet for the operator, /dealer for the dealer, the owner's and the operator's page of
    car-a, and the owner's live stream, which must go on to show a message added now."""
    from relay.models import utcnow

    olga, dan, alice = (login(relay, u) for u in ("olga", "dan", "alice"))
    for client, path in ((olga, "/fleet"), (dan, "/dealer"), (alice, "/v/car-a"),
                         (olga, "/v/car-a")):
        r = client.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[-500:])
    live = SseReader(login(relay, "alice"), "/v/car-a/events")
    try:
        wait_until(lambda: live.of("state"), 10, "the state card on the live stream")
        add_message(relay, vehicle_id="car-a", msg_id=str(uuid.uuid4()), ts=utcnow(),
                    kind="battery.low", severity="warning", visibility="private",
                    text="AFTER-THE-BAD-DATA", data={})
        wait_until(lambda: any("AFTER-THE-BAD-DATA" in d for d in live.of("item")), 10,
                   "a new message on the same live stream")
    finally:
        live.close()


def add_message(relay: Relay, **fields: Any) -> None:
    """Store a message as the ingest would (numbered under the vehicle's lock), wake its pages."""
    from relay.store import add_messages

    fields.setdefault("received_at", fields.get("ts"))
    with relay.ctx.sessions() as s, s.begin():
        add_messages(s, [fields])
    relay.ctx.hub.notify([fields["vehicle_id"]])


def start_relay_process(config_path: Path, log: Path) -> subprocess.Popen[bytes]:
    """`carfriend relay --config F` as a process of its own (for SIGKILL), output to log."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "agent.cli", "relay", "--config",
                                 str(config_path)], stdout=out, stderr=out, env=env, cwd=ROOT)


def start_simulated_agent(relay: Relay, tmp_path: Path, vehicle: str, scenario: str = "plugged-in-at-home",
                          speed: float = 30) -> tuple[subprocess.Popen[bytes], Any]:
    """The real agent with its simulator (`carfriend run --simulate`) talking to this relay's
    broker with the vehicle's command key; its output goes to tmp_path/agent.log."""
    root = Path(__file__).resolve().parents[2]
    key = (relay.config.keys.dir / f"{vehicle}.key").read_text().strip()
    env = {**os.environ, "PYTHONPATH": str(root),
           "CARFRIEND_MQTT__HOST": relay.config.mqtt.host,
           "CARFRIEND_MQTT__PORT": str(relay.config.mqtt.port),
           "CARFRIEND_STORAGE__STATE_DIR": str(tmp_path / "agent-state"),
           "CARFRIEND_COMMAND_KEY": key}
    log = (tmp_path / "agent.log").open("wb")
    agent = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config",
                              str(root / "config" / "vehicles" / "carfriend-ev.toml"),
                              "--simulate", scenario, "--speed", str(speed)],
                             stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    return agent, log


def stop_agent(agent: subprocess.Popen[bytes], log: Any) -> None:
    agent.terminate()
    try:
        agent.wait(20)
    except subprocess.TimeoutExpired:
        agent.kill()
    log.close()
