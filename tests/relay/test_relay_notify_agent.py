"""The owner answers the real car from a phone notification: `carfriend run --simulate` (the agent
and its simulator) asks "Is that OK?", the question arrives as a Web Push whose "Later" action
posts to the relay, the relay sends the signed reply, and the agent schedules the charge and
confirms it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mqtt_helpers import Mosquitto
from notify_kit import PushService, notify_config, subscribe
from relay_testkit import login, populate, start_simulated_agent, stop_agent, wait_until
from sqlalchemy import select

from relay.admin import add_vehicles, grant
from relay.models import Command, Message
from relay.server import Relay

VEHICLE = "carfriend-ev-0001"
pytestmark = [pytest.mark.slow, pytest.mark.backends("sqlite")]


@pytest.fixture
def nrelay(tmp_path: Path, mosquitto: Mosquitto) -> Any:
    """The relay with notifications on; the simulated car's clock starts on its scenario's day,
    which may be more than a day ago, so the age limit for notifying is lifted."""
    r = Relay(notify_config(tmp_path, mosquitto, max_age_s=10 * 365 * 86400.0), live_poll_s=1.0)
    populate(r)
    r.start()
    assert r.ingest.connected.wait(30)
    yield r
    r.stop()


def test_later_from_a_push_notification_makes_the_simulated_car_schedule_its_charge(
        nrelay: Relay, push: PushService, tmp_path: Path) -> None:
    with nrelay.ctx.sessions() as s:
        add_vehicles(s, nrelay.config, [VEHICLE], name="Kit", generate_key=True)
        grant(s, "alice", "owner", VEHICLE)
    alice = login(nrelay, "alice")
    assert subscribe(alice, push.subscription("alice-phone")).status_code < 300
    agent, log = start_simulated_agent(nrelay, tmp_path, VEHICLE)
    try:
        def question_note() -> dict[str, Any] | None:
            notes = [n for n in push.messages("alice-phone") if n.get("token") and
                     "later" in [a["action"] for a in n.get("actions", [])]]
            return notes[0] if notes else None

        note = wait_until(question_note, 90, "the car's question as a push notification")
        # What the service worker posts when "Later" is tapped.
        r = alice.post("/push/action", json={"token": note["token"], "answer": "later"})
        assert r.status_code == 200 and r.json()["ok"], r.text

        def status() -> str:
            with nrelay.ctx.sessions() as s:
                cmd = s.scalars(select(Command).where(Command.vehicle_id == VEHICLE)).first()
                return cmd.status if cmd is not None and cmd.status in ("completed", "rejected", "failed") else ""

        final = wait_until(status, 60, "the agent's result for the reply")
        assert final == "completed", (tmp_path / "agent.log").read_text()[-3000:]

        def confirmation() -> list[str]:
            with nrelay.ctx.sessions() as s:
                return list(s.scalars(select(Message.text).where(Message.vehicle_id == VEHICLE,
                                                                 Message.kind == "charge.scheduled")))

        (text,) = wait_until(confirmation, 30, "the car's confirmation")
        assert text
    finally:
        stop_agent(agent, log)
