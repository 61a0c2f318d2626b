"""The owner's data in the owner's hands: export as JSON and CSV, delete the history with a
confirmation; nobody else can do either (web and command line, on both databases)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import zipfile
from pathlib import Path

import httpx
import pytest
from relay_testkit import (
    CarPublisher,
    base_url,
    count_rows,
    csrf_of,
    login,
    persona_message,
    wait_until,
)
from sqlalchemy import select

from relay import privacy
from relay.cli import cmd_export, cmd_purge
from relay.models import (
    Appointment,
    Command,
    Message,
    Notification,
    NotifyChannel,
    NotifyMute,
    PushSubscription,
    StateRecord,
    User,
    Vehicle,
    utcnow,
)
from relay.server import Relay

SOC = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed"
HISTORY = (Message, StateRecord, Command, Appointment)


def fill(relay: Relay, car: CarPublisher) -> None:
    """car-a: a private message (one that a spreadsheet would run), a state, an appointment
    request, a command; car-b: a message."""
    car.publish("carfriend/v1/car-a/messages",
                persona_message("car-a", "battery.low", text="=HYPERLINK(\"http://x\")"))
    car.publish("carfriend/v1/car-a/state", {"ts": "2026-11-22T02:00:00Z", "signals": {
        SOC: {"value": 55, "ts": "2026-11-22T02:00:00Z"}}})
    car.publish("carfriend/v1/car-a/dealer/appointment", {"service_type": "brakes"})
    car.message("car-b", "battery.low", text="BOB-ONLY")
    alice = login(relay, "alice")
    token = csrf_of(alice.get("/v/car-a").text)
    assert alice.post("/v/car-a/command", data={"csrf": token, "name": "ping"},
                      headers={"accept": "application/json"}).status_code == 200
    wait_until(lambda: all(count_rows(relay, m, vehicle_id="car-a") for m in HISTORY)
               and count_rows(relay, Message, vehicle_id="car-b"), 10, "the data")


def test_the_owner_downloads_everything_about_the_car_as_json_and_csv(
        relay: Relay, car: CarPublisher) -> None:
    fill(relay, car)
    alice = login(relay, "alice")
    r = alice.get("/v/car-a/export?format=json")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    data = json.loads(r.content)
    assert data["vehicle"]["id"] == "car-a" and data["vehicle"]["state"][SOC]["value"] == 55
    assert [m["text"] for m in data["messages"]] == ["=HYPERLINK(\"http://x\")"]
    assert len(data["state_history"]) == 1 and data["commands"][0]["name"] == "ping"
    assert data["appointments"][0]["service_type"] == "brakes"
    assert "BOB-ONLY" not in r.text
    r = alice.get("/v/car-a/export?format=csv")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    files = zipfile.ZipFile(io.BytesIO(r.content))
    assert set(files.namelist()) == {"vehicle.csv", "messages.csv", "state_history.csv",
                                     "commands.csv", "command_results.csv", "appointments.csv",
                                     "fleet_reports.csv", "notifications.csv", "memberships.csv",
                                     "notify_mutes.csv", "purges.csv", "notify_targets.csv"}
    messages = list(csv.DictReader(io.StringIO(files.read("messages.csv").decode())))
    assert len(messages) == 1 and messages[0]["text"] == "'=HYPERLINK(\"http://x\")"
    state = list(csv.DictReader(io.StringIO(files.read("state_history.csv").decode())))
    assert json.loads(state[0]["signals"])[SOC]["value"] == 55


@pytest.mark.parametrize(("who", "status"), [("fay", 403), ("dan", 403), ("olga", 403),
                                             ("bob", 404), (None, 401)])
def test_nobody_but_the_owner_can_export_or_delete(relay: Relay, car: CarPublisher,
                                                   who: str | None, status: int) -> None:
    fill(relay, car)
    client = login(relay, who) if who else httpx.Client(base_url=base_url(relay), timeout=10)
    for fmt in ("json", "csv"):
        r = client.get(f"/v/car-a/export?format={fmt}", follow_redirects=False)
        assert r.status_code == (303 if who is None else status), (who, r.status_code)
        assert "HYPERLINK" not in r.text
    token = csrf_of(client.get("/login" if who is None else "/").text)
    r = client.post("/v/car-a/purge", data={"csrf": token, "confirm": "car-a"},
                    follow_redirects=False)
    assert r.status_code == status
    assert all(count_rows(relay, m, vehicle_id="car-a") for m in HISTORY)


def test_the_owner_deletes_the_history_after_typing_the_cars_id(
        relay: Relay, car: CarPublisher, caplog: pytest.LogCaptureFixture) -> None:
    fill(relay, car)
    alice = login(relay, "alice")
    token = csrf_of(alice.get("/v/car-a").text)
    r = alice.post("/v/car-a/purge", data={"csrf": token, "confirm": "yes"})
    assert r.status_code == 400 and "type car-a to confirm" in r.text
    assert all(count_rows(relay, m, vehicle_id="car-a") for m in HISTORY)
    with caplog.at_level(logging.WARNING, logger="relay.privacy"):
        r = alice.post("/v/car-a/purge", data={"csrf": token, "confirm": "car-a"},
                       follow_redirects=False)
    assert r.status_code == 303
    assert not any(count_rows(relay, m, vehicle_id="car-a") for m in HISTORY)
    assert count_rows(relay, Message, vehicle_id="car-b") == 1  # another car's untouched
    assert "history of car-a purged by alice" in caplog.text
    with relay.ctx.sessions() as s:
        vehicle = s.get(Vehicle, "car-a")
        assert vehicle is not None and vehicle.state is None  # the car stays registered
    page = alice.get("/v/car-a")
    assert page.status_code == 200 and "history was deleted" in page.text
    # New data is stored again, after the old (the live cursor does not go back).
    car.message("car-a", "battery.low", text="AFTER-THE-PURGE")
    wait_until(lambda: count_rows(relay, Message, vehicle_id="car-a") == 1, 10, "a new message")
    assert "AFTER-THE-PURGE" in alice.get("/v/car-a").text


def test_the_operator_exports_and_purges_from_the_command_line(
        relay: Relay, car: CarPublisher, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(relay, car)
    config = tmp_path / "relay.toml"
    ns = argparse.Namespace(config=config, vehicle="car-a", format="json", output=None)
    assert cmd_export(ns) == 0
    assert json.loads(capsys.readouterr().out)["messages"][0]["vehicle_id"] == "car-a"
    ns.format, ns.output = "csv", tmp_path / "car-a.zip"
    assert cmd_export(ns) == 0
    assert "messages.csv" in zipfile.ZipFile(ns.output).namelist()
    assert cmd_purge(argparse.Namespace(config=config, vehicle="car-a", yes=True)) == 0
    assert "messages 1" in capsys.readouterr().out
    assert not any(count_rows(relay, m, vehicle_id="car-a") for m in HISTORY)


def test_every_table_about_a_car_is_exported() -> None:
    """A new table with a vehicle_id column fails here until the export (and the purge, or
    the list of what a purge keeps) knows about it; so does a new column of `vehicles`."""
    assert privacy.vehicle_tables() == set(privacy.TABLES)
    assert not set(privacy.HISTORY) & set(privacy.KEPT)
    vehicle_columns = {c.key for c in Vehicle.__table__.columns}
    assert vehicle_columns == set(privacy.VEHICLE_FIELDS) | set(privacy.VEHICLE_INTERNAL)


PUSH_ENDPOINT = "https://push.example.net/wpush/v2/SECRET-ENDPOINT-TOKEN"


def fill_everything(relay: Relay, car: CarPublisher) -> None:
    """A row about car-a in every table that can hold one: what fill() leaves, an earlier purge,
    a command result and a fleet report from the car, a notification of its message delivered
    to alice's browser and to fay's channel, fay's mute of the car."""
    with relay.ctx.sessions() as s:
        privacy.purge_vehicle(s, "car-a", by="operator test (cli)")
        s.commit()
    fill(relay, car)
    with relay.ctx.sessions() as s:
        command_id = s.scalars(select(Command.id)).one()
    car.publish("carfriend/v1/car-a/cmd/ping/result", {"id": command_id, "status": "completed"})
    car.publish("carfriend/v1/car-a/fleet", {"kind": "outbox.status", "reason": "test"})
    with relay.ctx.sessions() as s, s.begin():
        users = {u.username: u.id for u in s.scalars(select(User))}
        message = s.scalars(select(Message).where(Message.vehicle_id == "car-a")).one()
        push = PushSubscription(user_id=users["alice"], endpoint=PUSH_ENDPOINT,
                                p256dh="SECRET-P256DH", auth="SECRET-AUTH", label="Alice's phone")
        channel = NotifyChannel(user_id=users["fay"], scheme="ntfy", label="ntfy://…/fay",
                                secret="SECRET-CHANNEL-URL")
        s.add_all([push, channel, NotifyMute(user_id=users["fay"], vehicle_id="car-a")])
        s.flush()
        for user, target, kind in (("alice", f"push:{push.id}", "webpush"),
                                   ("fay", f"channel:{channel.id}", "ntfy")):
            s.add(Notification(user_id=users[user], vehicle_id="car-a", msg_id=message.msg_id,
                               message_seq=message.seq, target=target, channel=kind,
                               status="sent", next_attempt_at=utcnow(), sent_at=utcnow(),
                               last_error=f"HTTP 503 from {user}-host.example"))
    wait_until(lambda: count_rows(relay, privacy.TABLES["command_results"], vehicle_id="car-a")
               and count_rows(relay, privacy.TABLES["fleet_reports"], vehicle_id="car-a"), 10,
               "the result and the fleet report")


def test_the_export_holds_a_row_of_every_table_about_the_car_and_no_secret(
        relay: Relay, car: CarPublisher) -> None:
    fill_everything(relay, car)
    alice = login(relay, "alice")
    r = alice.get("/v/car-a/export?format=json")
    assert r.status_code == 200
    data = json.loads(r.content)
    for name in (*privacy.vehicle_tables(), "notify_targets"):
        assert data[name], f"{name}: nothing exported"
        assert all(row.get("vehicle_id", "car-a") == "car-a" for row in data[name]), name
    assert {(m["user"], m["role"]) for m in data["memberships"]} == {
        ("alice", "owner"), ("fay", "family"), ("dan", "dealer")}  # not olga: all vehicles
    assert data["purges"][0]["by"] == "operator test (cli)"
    # Where they went: the owner's own browser by its label; fay's channel without (hers).
    assert {(t["user"], t["kind"], t["label"]) for t in data["notify_targets"]} == {
        ("alice", "webpush", "Alice's phone"), ("fay", "ntfy", None)}
    assert "/fay" not in r.text and "fay-host" not in r.text
    assert {n["user"] for n in data["notifications"]} == {"alice", "fay"}
    assert "SECRET" not in r.text, "a push endpoint, its keys or a channel URL was exported"
    r = alice.get("/v/car-a/export?format=csv")
    files = zipfile.ZipFile(io.BytesIO(r.content))
    assert set(files.namelist()) == {f"{n}.csv" for n in (
        "vehicle", *privacy.vehicle_tables(), "notify_targets")}
    for name in files.namelist():
        text = files.read(name).decode()
        rows = list(csv.DictReader(io.StringIO(text)))
        assert rows, f"{name}: no rows"
        assert "SECRET" not in text, name
    # A purge deletes the history (notifications included) and keeps the rest, recorded.
    with relay.ctx.sessions() as s:
        deleted = privacy.purge_vehicle(s, "car-a", by="alice")
        s.commit()
    assert deleted["notifications"] == 2 and deleted["messages"] == 1
    with relay.ctx.sessions() as s:
        data = privacy.export_vehicle(s, "car-a")
    assert not any(data[n] for n in privacy.HISTORY) and not data["notify_targets"]
    assert len(data["purges"]) == 2 and data["purges"][1]["deleted"]["messages"] == 1
    assert data["memberships"] and data["notify_mutes"]
