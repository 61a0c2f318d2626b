"""Answers and buttons become signed commands on the car's topic; results come back live."""

from __future__ import annotations

import json

from relay_testkit import CarPublisher, SseReader, csrf_of, login, wait_until
from responder import StandInCar
from sqlalchemy import select

from relay.models import Command
from relay.server import Relay
from relay.signing import load_key


def test_answering_later_sends_a_signed_reply_and_shows_each_result_live(
        relay: Relay, car: CarPublisher) -> None:
    key = load_key(relay.config.keys.dir, "car-a")
    standin = StandInCar(relay.config.mqtt.host, relay.config.mqtt.port, "car-a", key)
    try:
        msg = car.message("car-a", "charge.started", severity="info", question=["ok", "later"],
                          text="Charging. Done by 2:15 a.m. Is that OK?")
        alice = login(relay, "alice")
        page = wait_until(lambda: _page_with(alice, "Is that OK?"), what="the question")
        live = SseReader(login(relay, "alice"), "/v/car-a/events")
        r = alice.post("/v/car-a/reply", headers={"accept": "application/json"},
                       data={"csrf": csrf_of(page), "message_id": msg["id"], "answer": "later"})
        assert r.status_code == 200 and r.json()["status"] == "sent"
        wait_until(lambda: standin.received, what="the command at the car")
        name, payload, verified = standin.received[0]
        assert (name, verified) == ("reply", True)
        assert payload["args"] == {"message_id": msg["id"], "answer": "later"}
        statuses = lambda: [json.loads(d)["status"] for d in live.of("command")]  # noqa: E731
        wait_until(lambda: "completed" in statuses(), what="completed on the live stream")
        wait_until(lambda: any("11:00 p.m." in d for d in live.of("item")),
                   what="the car's confirmation on the live stream")
        live.close()
        with relay.ctx.sessions() as s:
            cmd = s.scalars(select(Command)).one()
        assert cmd.status == "completed" and cmd.message_id == msg["id"]
        assert "Later" not in alice.get("/v/car-a").text.split("Is that OK?")[1].split("</article>")[0]
    finally:
        standin.close()


def _page_with(client, text: str) -> str:  # type: ignore[no-untyped-def]
    page = client.get("/v/car-a").text
    return page if text in page else ""


def test_buttons_send_bounded_commands_and_a_missing_key_is_explained(
        relay: Relay, car: CarPublisher) -> None:
    standin = StandInCar(relay.config.mqtt.host, relay.config.mqtt.port, "car-a",
                         load_key(relay.config.keys.dir, "car-a"))
    try:
        alice = login(relay, "alice")
        token = csrf_of(alice.get("/v/car-a").text)
        for data in ({"name": "climate.start", "target_c": "21.5"},
                     {"name": "charge.limit", "limit_pct": "80"}, {"name": "charge.stop"}):
            r = alice.post("/v/car-a/command", data={"csrf": token, **data})
            assert r.status_code == 303  # without JavaScript: back to the page
        wait_until(lambda: len(standin.received) == 3, what="three commands at the car")
        assert [(n, p["args"], ok) for n, p, ok in standin.received] == [
            ("climate.start", {"target_c": 21.5}, True), ("charge.limit", {"limit_pct": 80}, True),
            ("charge.stop", {}, True)]
    finally:
        standin.close()
    (relay.config.keys.dir / "car-a.key").unlink()
    r = alice.post("/v/car-a/command", data={"csrf": token, "name": "ping"},
                   headers={"accept": "application/json"})
    assert r.status_code == 400 and "no command key" in r.json()["error"]
