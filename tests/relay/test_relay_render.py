"""Car data that once broke other people's pages: refused on ingest, and rendered defensively
when it is in the database anyway (stored before the checks existed, or by another tool)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from mqtt_helpers import Mosquitto
from relay_testkit import cert_car, count_rows, login, pages_render, persona_message, wait_until

from relay.models import Appointment, Message, Vehicle, utcnow
from relay.server import Relay
from relay.store import add_messages

SOC = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed"
DTCS = "Vehicle.Diagnostics.DTCList"
CHARGING = "Vehicle.Powertrain.TractionBattery.Charging.IsCharging"
HUGE = 10**401


def store_hostile_rows(relay: Relay) -> None:
    """What the security review got stored, written straight into the database (lone
    surrogates only in JSON columns: SQLite's text columns cannot hold them). PostgreSQL's json
    refuses non-finite numbers, so there the worst is a number too big to format."""
    inf = HUGE if relay.engine.dialect.name == "postgresql" else float("inf")
    nan = HUGE if relay.engine.dialect.name == "postgresql" else float("nan")
    with relay.ctx.sessions() as s, s.begin():
        v = s.get(Vehicle, "car-a")
        assert v is not None
        v.state = {SOC: {"value": HUGE}, DTCS: {"value": ["P0A80", "\ud800X"]},
                   CHARGING: {"value": True}, "Vehicle.LowVoltageBattery.CurrentVoltage":
                   {"value": inf}}
        v.fleet = {"outbox.status": {"outbox": {"queued_total": HUGE, "oldest_age_s": inf,
                                                "dropped": {"info": inf}}}}
        v.revision += 1
        s.add(Appointment(vehicle_id="car-a", dedup_key="x", service_type="brakes",
                          payload={"service_type": "brakes\udc00", "odometer_km": HUGE,
                                   "slots": ["\ud83d"], "deep": {"a": [nan]}}))
        add_messages(s, [dict(vehicle_id="car-a", msg_id="m-eta", ts=utcnow(),
                              received_at=utcnow(), kind="charge.started", severity="info",
                              visibility="private", text="charging", persona="Kit",
                              question=["ok\ud800"], data={"eta": "\ud800"})])


def test_pages_and_the_live_stream_render_data_stored_before_the_checks(relay: Relay) -> None:
    store_hostile_rows(relay)
    pages_render(relay)
    page = login(relay, "olga").get("/fleet").text
    assert "P0A80" in page and "\ufffdX" in page  # the bad character shown as a replacement


@pytest.mark.parametrize(("leaf", "doc"), [
    ("state", {"vehicle_id": "car-a", "ts": "2026-11-22T02:00:00Z",
               "signals": {SOC: {"value": HUGE}}}),
    ("state", {"vehicle_id": "car-a", "ts": "2026-11-22T02:00:00Z",
               "signals": {DTCS: {"value": ["P0A80", "\ud800"]}}}),
    ("fleet", {"kind": "outbox.status", "vehicle_id": "car-a",
               "outbox": {"queued_total": 1, "dropped": {"info": "1e999"}}}),
    ("dealer/appointment", {"vehicle_id": "car-a", "service_type": "brakes \ud800"}),
    ("messages", persona_message("car-a", "charge.started", data={"eta": "\ud800"})),
])
def test_hostile_car_data_is_refused_on_ingest_and_every_page_still_renders(
        tls_relay: Relay, tls_broker: Mosquitto, pki: Path, leaf: str, doc: dict) -> None:
    car = cert_car(tls_broker, pki, "car-a")
    try:
        # json.dumps writes 1e999 as Infinity; write it as the number the review sent.
        body = json.dumps(doc).replace('"1e999"', "1e999")
        car.publish(f"carfriend/v1/car-a/{leaf}", body)
        good = car.message("car-a", "battery.low", ts=time.time() - 60)
        wait_until(lambda: count_rows(tls_relay, Message, msg_id=good["id"]) == 1, 15,
                   "the next good message")
        assert sum(tls_relay.ingest.dropped.values()) == 1
        pages_render(tls_relay)
    finally:
        car.close()
