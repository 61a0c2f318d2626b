"""Ingest against a real Mosquitto: stored once, bad input counted and dropped, never a crash."""

from __future__ import annotations

import json

from relay_testkit import CarPublisher, login, persona_message, wait_until
from sqlalchemy import func, select

from relay.models import (
    Appointment,
    Command,
    CommandResult,
    FleetReport,
    Message,
    StateRecord,
    Vehicle,
)
from relay.server import Relay


def count(relay: Relay, model: type, **where: object) -> int:
    with relay.ctx.sessions() as s:
        q = select(func.count()).select_from(model)
        for k, v in where.items():
            q = q.where(getattr(model, k) == v)
        return int(s.scalar(q) or 0)


def test_a_message_published_twice_is_stored_once(relay: Relay, car: CarPublisher) -> None:
    msg = car.message("car-a", "charge.started", question=["ok", "later"],
                      data={"eta": "2026-11-22T02:15:00.000Z"})
    car.publish("carfriend/v1/car-a/messages", msg)
    car.message("car-a", "battery.low", ts=1_790_000_000.0)
    wait_until(lambda: relay.ingest.stored >= 3, what="three messages processed")
    assert count(relay, Message, vehicle_id="car-a") == 2
    with relay.ctx.sessions() as s:
        stored = s.scalars(select(Message).where(Message.msg_id == msg["id"])).one()
    assert stored.question == ["ok", "later"] and stored.data["eta"] == "2026-11-22T02:15:00.000Z"


def test_bad_payloads_are_counted_and_dropped_and_ingest_goes_on(relay: Relay,
                                                                  car: CarPublisher) -> None:
    good = persona_message("car-a", "dtc.new")
    bad = {
        "carfriend/v1/car-a/messages": [b"not json", b"\xff\xfe", b"[]", b"{}",
                                        json.dumps({**good, "severity": "apocalyptic"}).encode(),
                                        json.dumps({**good, "text": "x" * 70_000}).encode()],
        "carfriend/v1/car-b/messages": [json.dumps(good).encode()],  # vehicle_id disagrees
        "carfriend/v1/ghost/messages": [json.dumps({**good, "vehicle_id": "ghost"}).encode()],
        "carfriend/v1/car-a/state": [b'{"ts": "yesterday"}'],
        "carfriend/v1/car-a/status": [b"sideways"],
        "carfriend/v1/car-a/cmd/reply/result": [b'{"id": "x", "status": "maybe"}'],
        "carfriend/v1/car-a/dealer/appointment": [b'"just a string"'],
    }
    for topic, payloads in bad.items():
        for payload in payloads:
            car.publish(topic, payload)
    car.publish("carfriend/v1/car-a/messages", good)
    wait_until(lambda: count(relay, Message) == 1, what="the good message after the bad ones")
    dropped = relay.ingest.dropped
    assert dropped["malformed-json"] == 2
    assert dropped["oversized"] == 1
    assert dropped["vehicle-mismatch"] == 1
    assert dropped["unknown-vehicle"] == 1
    assert dropped["invalid"] == 7
    assert count(relay, Message, vehicle_id="car-b") == 0


def test_state_status_results_appointments_and_fleet_reports_are_stored(
        relay: Relay, car: CarPublisher) -> None:
    soc = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed"
    car.publish("carfriend/v1/car-a/status", b"online", retain=True)
    for i, ts in enumerate(("2026-11-22T02:00:00Z", "2026-11-22T02:01:00Z")):
        car.publish("carfriend/v1/car-a/state", {"vehicle_id": "car-a", "ts": ts, "signals": {
            soc: {"value": 50 + i, "ts": ts, "stale": False}}}, retain=True)
    # An older snapshot arriving late does not replace the newer one.
    car.publish("carfriend/v1/car-a/state", {"vehicle_id": "car-a", "ts": "2026-11-22T01:00:00Z",
                                             "signals": {soc: {"value": 1, "stale": False}}})
    car.publish("carfriend/v1/car-a/cmd/ping/result",
                {"id": "cmd-1", "status": "completed", "reason": None, "ts": "2026-11-22T02:02:00Z"})
    appointment = {"vehicle_id": "car-a", "service_type": "annual inspection", "odometer_km": 15000,
                   "dtcs": ["P0A80"], "preferred_slots": ["2026-12-01T09:00:00+09:00"]}
    car.publish("carfriend/v1/car-a/dealer/appointment", appointment)
    car.publish("carfriend/v1/car-a/dealer/appointment", appointment)  # a retry: same content
    car.publish("carfriend/v1/car-a/fleet", {"kind": "outbox.status", "vehicle_id": "car-a",
                                             "outbox": {"queued_total": 3, "oldest_age_s": 120.0,
                                                        "dropped": {"info": 2, "warning": 0}},
                                             "new_field": [1]})
    wait_until(lambda: count(relay, FleetReport) == 1, what="the fleet report")
    with relay.ctx.sessions() as s:
        v = s.get(Vehicle, "car-a")
        assert v is not None and v.status == "online" and v.last_seen is not None
        assert v.state is not None and v.state[soc]["value"] == 51
        assert v.fleet is not None and v.fleet["outbox.status"]["outbox"]["queued_total"] == 3
    assert count(relay, StateRecord, vehicle_id="car-a") == 2  # not the late, older one
    assert count(relay, CommandResult, command_id="cmd-1") == 1
    assert count(relay, Command) == 0  # a result for a command this relay did not send
    assert count(relay, Appointment, vehicle_id="car-a") == 1


def test_state_deltas_apply_on_top_of_the_last_full_snapshot(relay: Relay, car: CarPublisher) -> None:
    soc, volts = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed", \
        "Vehicle.LowVoltageBattery.CurrentVoltage"
    car.publish("carfriend/v1/car-a/state", {"vehicle_id": "car-a", "ts": "2026-11-22T02:00:00Z",
                                             "full": True, "signals": {
        soc: {"value": 50.0, "stale": False}, volts: {"value": 12.4, "stale": False}}})
    car.publish("carfriend/v1/car-a/state", {"vehicle_id": "car-a", "ts": "2026-11-22T02:00:05Z",
                                             "full": False, "signals": {
        soc: {"value": 50.5, "stale": False}}})
    wait_until(lambda: relay.ingest.stored >= 2, what="both state documents")
    with relay.ctx.sessions() as s:
        v = s.get(Vehicle, "car-a")
        assert v is not None and v.state is not None
        assert v.state[soc]["value"] == 50.5 and v.state[volts]["value"] == 12.4
        history = s.scalars(select(StateRecord).order_by(StateRecord.ts)).all()
    assert [set(h.signals) for h in history] == [{soc, volts}, {soc, volts}]  # merged snapshots


def test_the_fleet_page_shows_the_agents_outbox_health(relay: Relay, car: CarPublisher) -> None:
    car.publish("carfriend/v1/car-b/fleet", {"kind": "outbox.status", "vehicle_id": "car-b",
                                             "outbox": {"queued_total": 417, "oldest_age_s": 5400.0,
                                                        "dropped": {"info": 7, "warning": 1}}})
    wait_until(lambda: relay.ingest.stored >= 1, what="the fleet report")
    page = login(relay, "olga").get("/fleet").text
    row = page.split(">Other car<", 1)[1].split("</tr>", 1)[0]
    assert "<td>417</td>" in row and "90 min" in row and "<td>8</td>" in row


def test_a_state_from_2099_is_refused_and_does_not_freeze_the_state(relay: Relay,
                                                                    car: CarPublisher) -> None:
    soc = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed"
    car.publish("carfriend/v1/car-a/state", {"vehicle_id": "car-a", "ts": "2099-01-01T00:00:00Z",
                                             "signals": {soc: {"value": 1.0}}})
    car.publish("carfriend/v1/car-a/state", {"vehicle_id": "car-a", "ts": "2026-11-22T02:00:00Z",
                                             "signals": {soc: {"value": 64.0}}})
    wait_until(lambda: relay.ingest.stored >= 1, what="the sane state")
    with relay.ctx.sessions() as s:
        v = s.get(Vehicle, "car-a")
        assert v is not None and v.state is not None and v.state[soc]["value"] == 64.0
    assert relay.ingest.dropped["invalid"] == 1


def test_new_signal_names_cannot_grow_every_history_row(relay: Relay, car: CarPublisher) -> None:
    """A car sending deltas with ever new names: the state stops at [ingest] max_signals, and so
    does every history row (1.7 MB of such input once became 81 MB of database)."""
    base = {"vehicle_id": "car-a", "full": False}
    car.publish("carfriend/v1/car-a/state", {**base, "full": True, "ts": "2026-11-22T00:00:00Z",
                                             "signals": {"Vehicle.Speed": {"value": 0.0}}})
    for i in range(100):
        ts = f"2026-11-22T{1 + i // 60:02d}:{i % 60:02d}:00Z"
        car.publish("carfriend/v1/car-a/state", {**base, "ts": ts, "signals": {
            f"Vehicle.Junk.Name{i:03d}x{'y' * 30}": {"value": "z" * 60}}})
    wait_until(lambda: relay.ingest.stored >= 101, 30, "every state document handled")
    with relay.ctx.sessions() as s:
        v = s.get(Vehicle, "car-a")
        assert v is not None and v.state is not None and len(v.state) == 64
        rows = s.scalars(select(StateRecord)).all()
    assert max(len(r.signals) for r in rows) == 64
    assert relay.ingest.dropped["signals-over-cap"] == 37
