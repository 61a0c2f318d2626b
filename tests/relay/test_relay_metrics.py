"""Health you can scrape: the agents' `health` topic checked and stored, shown on the fleet page;
`/metrics` in Prometheus format behind a token or on an admin address; the sample alert rules
refer only to metrics the relay exports."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from mqtt_helpers import Mosquitto, free_port
from prometheus_client.parser import text_string_to_metric_families
from relay_testkit import (
    CarPublisher,
    SseReader,
    login,
    persona_message,
    populate,
    relay_config,
    wait_until,
)

from agent.core.health import BusHealth, HealthMeter, Sample
from relay.ingest import Dropped, Limits, parse
from relay.models import Vehicle, utcnow
from relay.server import Relay

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docs" / "prometheus" / "carfriend-alerts.yml"
TOKEN = "scrape-me-0123456789abcdef"
AUX = "Vehicle.LowVoltageBattery.CurrentVoltage"


def health_doc(vehicle_id: str, state: str = "active", depth: int = 3) -> dict:
    """A health document as the agent's own HealthMeter makes it."""
    meter = HealthMeter(vehicle_id, "0.1.0", Sample(100.0, 1.0, 40_000_000, 0))
    now = datetime.now(UTC).timestamp()
    report = meter.report(now, Sample(400.0, 10.0, 48_000_000, 270_000), counters={
        "frames": 270_000, "decoded": 90_000, "dropped": {"unknown_id": 180_000}},
        bus=BusHealth(interface="socketcan", channel="can0", state=state, error_frames=2,
                      bus_off_count=int(state == "bus_off")),
        outbox={"queued_total": depth, "oldest_age_s": 12.5 if depth else None,
                "dropped": {"info": 0}}, mqtt_sent=42)
    return json.loads(report.model_dump_json())


def scrape(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)] of a Prometheus text exposition."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


@pytest.fixture
def metrics_relay(tmp_path: Path, mosquitto: Mosquitto):
    cfg = relay_config(tmp_path, mosquitto, metrics={"token": TOKEN, "listen_port": free_port()})
    r = Relay(cfg, live_poll_s=1.0)
    populate(r)
    r.start()
    assert r.ingest.connected.wait(30)
    yield r
    r.stop()


# -- the health topic -------------------------------------------------------------------------

def test_the_docs_example_and_the_agents_own_report_pass_the_relays_health_model() -> None:
    text = (ROOT / "docs" / "topics.md").read_text().split("## `health`", 1)[1]
    example = text.split("```json", 1)[1].split("```", 1)[0].encode()
    now = datetime(2026, 11, 21, 10, 10)
    rec = parse("carfriend/v1/carfriend-ev-0001/health", example, Limits(), now)
    assert rec.leaf == "health" and rec.body.bus.state == "active" and rec.body.outbox.depth == 0
    doc = health_doc("car-a")
    assert parse("carfriend/v1/car-a/health", json.dumps(doc).encode(), Limits(),
                 utcnow()).body.frames.per_s == 900.0


@pytest.mark.parametrize(("change", "why"), [
    (lambda d: d["process"].update(cpu_pct=float("nan")), "process.cpu_pct"),
    (lambda d: d["bus"].update(state="exploded"), "bus.state"),
    (lambda d: d["frames"].update(total="12"), "frames.total"),  # strict: no coercion
    (lambda d: d["frames"]["dropped"].update({f"r{i}": 1 for i in range(20)}), "frames.dropped"),
    (lambda d: d.pop("outbox"), "outbox"),
    (lambda d: d.update(ts="2099-01-01T00:00:00Z"), "ts"),
    (lambda d: d.update(version="x" * 33), "version"),
])
def test_a_bad_health_document_is_refused_naming_the_field(change, why: str) -> None:
    doc = health_doc("car-a")
    change(doc)
    with pytest.raises(Dropped) as err:
        parse("carfriend/v1/car-a/health", json.dumps(doc).encode(), Limits(), utcnow())
    assert err.value.reason == "invalid" and why in err.value.detail


def test_health_is_stored_and_shown_on_the_fleet_page(relay: Relay, car: CarPublisher) -> None:
    car.publish("carfriend/v1/car-a/health", health_doc("car-a", "error_passive"))
    bad = health_doc("car-b")
    bad["bus"]["state"] = "exploded"
    car.publish("carfriend/v1/car-b/health", bad)
    wait_until(lambda: relay.ingest.dropped["invalid"] == 1 and relay.ingest.stored_by_topic["health"] == 1,
               10, "one health document stored, one dropped")
    with relay.ctx.sessions() as s:
        a, b = s.get(Vehicle, "car-a"), s.get(Vehicle, "car-b")
        assert a is not None and a.health is not None and a.health["bus"]["state"] == "error_passive"
        assert b is not None and b.health is None
    # An older document arriving late changes nothing.
    old = health_doc("car-a", "bus_off")
    old["ts"] = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    car.publish("carfriend/v1/car-a/health", old)
    wait_until(lambda: relay.ingest.stored_by_topic["health"] == 2, 10, "the late one stored")
    page = login(relay, "olga").get("/fleet").text
    assert "error passive" in page and "bus off" not in page and "0.1.0" in page
    assert "900" in page  # frames/s
    assert "no health report" in page  # car-b


# -- /metrics ---------------------------------------------------------------------------------

def test_metrics_answer_only_the_token(metrics_relay: Relay) -> None:
    url = f"http://127.0.0.1:{metrics_relay.config.web.port}/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
    r = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert "carfriend_relay_ingest_lag_seconds" in r.text


def test_metrics_are_not_served_on_the_web_port_without_a_token(relay: Relay) -> None:
    r = httpx.get(f"http://127.0.0.1:{relay.config.web.port}/metrics",
                  headers={"Authorization": "Bearer anything-at-all-here"})
    assert r.status_code == 404


def test_metrics_count_ingest_drops_commits_streams_and_the_fleet(metrics_relay: Relay,
                                                                  car: CarPublisher) -> None:
    relay = metrics_relay
    car.message("car-a")
    car.publish("carfriend/v1/car-a/messages", b"{not json")
    car.publish("carfriend/v1/car-a/health", health_doc("car-a", "bus_off", depth=250))
    now = utcnow().isoformat(timespec="milliseconds") + "Z"
    for vid, volts in (("car-a", 11.5), ("car-b", 12.6)):
        car.publish(f"carfriend/v1/{vid}/state", {"vehicle_id": vid, "ts": now,
                                                 "signals": {AUX: {"value": volts}}})
    car.publish("carfriend/v1/car-b/status", "online", retain=True)
    wait_until(lambda: relay.ingest.stored >= 5 and relay.ingest.dropped["malformed-json"] == 1,
               10, "everything stored or dropped")
    live = SseReader(login(relay, "alice"), "/v/car-a/events")
    try:
        wait_until(lambda: live.of("state"), 10, "the live stream open")
        # The admin listener: no token needed there.
        text = httpx.get(f"http://127.0.0.1:{relay.config.metrics.listen_port}/metrics").text
    finally:
        live.close()
    m = scrape(text)

    def value(name: str, **labels: str) -> float:
        return next(v for lab, v in m[name] if all(lab.get(k) == x for k, x in labels.items()))

    assert value("carfriend_relay_messages_ingested_total", topic="messages") == 1
    assert value("carfriend_relay_messages_ingested_total", topic="health") == 1
    assert value("carfriend_relay_messages_ingested_total", topic="state") == 2
    assert value("carfriend_relay_dropped_total", reason="malformed-json") == 1
    assert value("carfriend_relay_db_commit_seconds_count") >= 1
    assert value("carfriend_relay_live_streams_open") == 1
    assert value("carfriend_relay_broker_connected") == 1
    assert value("carfriend_vehicle_aux_battery_volts", vehicle="car-a") == 11.5
    assert value("carfriend_vehicle_online", vehicle="car-b") == 1
    assert value("carfriend_vehicle_online", vehicle="car-a") == 0
    assert value("carfriend_agent_outbox_depth", vehicle="car-a") == 250
    assert value("carfriend_agent_bus_state", vehicle="car-a", state="bus_off") == 1
    assert value("carfriend_agent_bus_state", vehicle="car-a", state="active") == 0
    seen = value("carfriend_vehicle_last_seen_timestamp_seconds", vehicle="car-a")
    assert abs(seen - datetime.now(UTC).timestamp()) < 60
    check_rules_against(m)


def check_rules_against(m: dict[str, list]) -> None:
    """The sample alert rules: valid YAML of Prometheus' rule-file shape, and every metric an
    expression names is one the relay exports (promtool is not available here)."""
    doc = yaml.safe_load(RULES.read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert {"CarfriendAgentOffline", "CarfriendOutboxGrowing",
            "CarfriendAuxBatteryLowFleetWide"} <= names
    functions = {"time", "deriv", "count", "sum", "rate", "histogram_quantile", "and"}
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"\d+[smhd]", rule["for"]) and rule["labels"]["severity"] in (
            "warning", "critical") and rule["annotations"]["summary"]
        expr = rule["expr"]
        assert expr.count("(") == expr.count(")") and expr.count("[") == expr.count("]")
        # Label matchers, groupings and range selectors name no metric.
        bare = re.sub(r"\{[^}]*\}|\b(by|on|without|ignoring)\s*\([^)]*\)|\[[^\]]*\]", " ", expr)
        metrics = [n for n in re.findall(r"\b[a-z_][a-z0-9_]*\b", bare) if n not in functions]
        assert metrics, expr
        for name in metrics:
            assert name in m, f"{rule['alert']}: {name} is not exported by the relay"


def test_a_short_metrics_token_is_a_config_error(tmp_path: Path, mosquitto: Mosquitto) -> None:
    from agent.core.errors import ConfigError
    with pytest.raises(ConfigError, match="token: at least 16 characters"):
        relay_config(tmp_path, mosquitto, metrics={"token": "short"})


def test_persona_message_helper_still_matches_the_models() -> None:
    rec = parse("carfriend/v1/car-a/messages", json.dumps(persona_message("car-a")).encode(),
                Limits(), utcnow())
    assert rec.leaf == "messages"
