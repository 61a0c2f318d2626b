"""Notifications with real protocol traffic on this machine: Web Push to a local push service
(payload decrypted with the subscription's keys, VAPID JWT checked), Apprise to a local SMTP
server and a JSON webhook; roles, mutes, retries, expired subscriptions, oversized payloads, bad
channel URLs, answers from a notification's action button."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from mqtt_helpers import Mosquitto
from notify_kit import (
    SUBJECT,
    PushService,
    SmtpInbox,
    Webhook,
    add_channel,
    notify_config,
    subscribe,
)
from relay_testkit import CarPublisher, csrf_of, login, populate, wait_until
from responder import StandInCar
from sqlalchemy import select

from relay.models import Message, Notification, NotifyChannel, PushSubscription
from relay.server import Relay
from relay.signing import load_key


def rows(relay: Relay, **where: Any) -> list[Notification]:
    with relay.ctx.sessions() as s:
        q = select(Notification)
        for k, v in where.items():
            q = q.where(getattr(Notification, k) == v)
        return list(s.scalars(q))


def test_a_message_reaches_push_smtp_and_webhook_once_each_within_2_s_and_family_only_theirs(
        nrelay: Relay, car: CarPublisher, push: PushService, hook: Webhook, smtp: SmtpInbox) -> None:
    alice, fay = login(nrelay, "alice"), login(nrelay, "fay")
    assert subscribe(alice, push.subscription("alice-phone")).json() == {"ok": True}
    assert "Added mailto://" in add_channel(alice, smtp.url("alice@example.org"))
    assert "Added json://" in add_channel(alice, hook.url("alice"))
    add_channel(fay, hook.url("fay"))
    assert subscribe(fay, push.subscription("fay-phone")).json()["ok"]

    published = time.monotonic()
    private = car.message("car-a", "charge.started", severity="info", question=["ok", "later"],
                          text="The charge will be completed by 2:15 a.m. Is that OK?")
    wait_until(lambda: push.to("/push/alice-phone") and smtp.to("alice@example.org")
               and hook.to("/alice"), 5, "alice's three channels")
    arrivals = [push.to("/push/alice-phone")[0].at, hook.to("/alice")[0].at,
                smtp.mails[0][2]]
    latency = max(arrivals) - published
    print(f"publish -> last of push, webhook, SMTP: {latency:.3f} s")
    assert latency < 2.0, f"{latency:.2f} s from publish to the last channel"

    (note,) = push.messages("alice-phone")
    assert note["body"] == private["text"] and note["url"].startswith("/v/car-a#m-")
    assert [a["action"] for a in note["actions"]] == ["ok", "later"] and note["token"]
    push.check_vapid(push.to("/push/alice-phone")[0], nrelay.ctx.vapid_key, SUBJECT)
    assert "2:15 a.m." in smtp.to("alice@example.org")[0]
    (posted,) = hook.payloads("alice")
    assert posted["message"].startswith(private["text"]) and "https://relay.example.org/v/car-a" in posted["message"]

    car.message("car-a", "charge.completed", severity="info", visibility="family",
                text="Charging is done: 80 %.")
    wait_until(lambda: hook.to("/fay") and push.to("/push/fay-phone")
               and len(push.to("/push/alice-phone")) == 2, 5, "the family message to both")
    time.sleep(1.5)  # retries or a second fan-out would show up by now
    assert len(push.to("/push/alice-phone")) == 2 and len(hook.to("/alice")) == 2
    assert len(smtp.to("alice@example.org")) == 2
    # Family: only the family message, without answer buttons.
    assert [p["message"].split("\n")[0] for p in hook.payloads("fay")] == ["Charging is done: 80 %."]
    (fay_note,) = push.messages("fay-phone")
    assert "actions" not in fay_note and "token" not in fay_note
    assert all(n.status == "sent" for n in rows(nrelay))
    assert len(rows(nrelay)) == 3 + 3 + 2
    status = alice.get("/settings").text
    assert status.count('class="delivery status-sent"') == 6


def test_answering_from_a_notification_sends_a_signed_reply_the_car_confirms(
        nrelay: Relay, car: CarPublisher, push: PushService) -> None:
    alice = login(nrelay, "alice")
    subscribe(alice, push.subscription("alice-phone"))
    standin = StandInCar(nrelay.config.mqtt.host, nrelay.config.mqtt.port, "car-a",
                         load_key(nrelay.config.keys.dir, "car-a"))
    try:
        car.message("car-a", "charge.started", severity="info", question=["ok", "later"],
                    text="Is that OK?")
        wait_until(lambda: push.to("/push/alice-phone"), 5, "the push")
        (note,) = push.messages("alice-phone")
        # What the service worker posts when "Later" is tapped (no CSRF token: the token).
        r = alice.post("/push/action", json={"token": note["token"], "answer": "later"})
        assert r.json()["ok"], r.text
        wait_until(lambda: standin.received, 10, "the car got the command")
        name, command, signature_ok = standin.received[0]
        assert name == "reply" and signature_ok and command["args"]["answer"] == "later"
        wait_until(lambda: _texts(nrelay, "car-a", "charge.scheduled"), 10, "the car's confirmation")
        # The token is bound to alice and to that message.
        bob = login(nrelay, "bob")
        assert bob.post("/push/action", json={"token": note["token"], "answer": "ok"}).status_code == 403
        forged = note["token"][:-2] + ("AA" if not note["token"].endswith("AA") else "BB")
        assert alice.post("/push/action", json={"token": forged, "answer": "ok"}).status_code == 403
        assert alice.post("/push/action", json={"token": note["token"], "answer": "now"}).status_code == 400
        assert httpx.post(f"{alice.base_url}/push/action",
                          json={"token": note["token"], "answer": "ok"}).status_code == 401
    finally:
        standin.close()


def _texts(relay: Relay, vid: str, kind: str) -> list[str]:
    with relay.ctx.sessions() as s:
        return list(s.scalars(select(Message.text).where(Message.vehicle_id == vid,
                                                         Message.kind == kind)))


def test_a_failing_push_service_is_retried_and_never_holds_up_ingest(
        nrelay: Relay, car: CarPublisher, push: PushService) -> None:
    # 503, then a request that hangs past the timeout, then accepted.
    push.respond = lambda n: [(503, 0.0), (201, 3.0)][n] if n < 2 else (201, 0.0)
    alice = login(nrelay, "alice")
    subscribe(alice, push.subscription("alice-phone"))
    car.message("car-a", text="first")
    wait_until(lambda: len(push.to("/push/alice-phone")) >= 2, 5, "a retry after the 503")
    started, before = time.monotonic(), nrelay.ingest.stored
    for i in range(20):  # while the push service hangs, the ingest goes on
        car.message("car-b", text=f"other {i}", ts=time.time() - i)
    wait_until(lambda: nrelay.ingest.stored >= before + 20, 5, "ingest during the hang")
    assert time.monotonic() - started < 3.0
    wait_until(lambda: [n.status for n in rows(nrelay)] == ["sent"], 10, "delivered in the end")
    (row,) = rows(nrelay)
    assert row.attempts == 3 and row.last_error is None
    assert len({m["body"] for m in push.messages("alice-phone")}) == 1
    sent, failed, _pending = nrelay.notifier.counters()
    assert sent == {"webpush": 1} and failed == {"webpush": 2}
    text = nrelay.metrics.exposition().decode()
    assert 'carfriend_relay_notifications_sent_total{channel="webpush"} 1.0' in text
    assert 'carfriend_relay_notifications_failed_total{channel="webpush"} 2.0' in text
    assert "carfriend_relay_notifications_pending 0.0" in text


def test_an_expired_subscription_is_removed(nrelay: Relay, car: CarPublisher,
                                            push: PushService) -> None:
    push.respond = lambda n: (410, 0.0)
    alice = login(nrelay, "alice")
    subscribe(alice, push.subscription("old-phone"))
    car.message("car-a")
    wait_until(lambda: [n.status for n in rows(nrelay)] == ["gone"], 5, "marked gone")
    with nrelay.ctx.sessions() as s:
        assert s.scalars(select(PushSubscription)).first() is None
    assert len(push.to("/push/old-phone")) == 1  # not retried


def test_a_payload_over_4_kb_is_shortened_not_dropped(nrelay: Relay, car: CarPublisher,
                                                      push: PushService) -> None:
    alice = login(nrelay, "alice")
    subscribe(alice, push.subscription("alice-phone"))
    text = "充電が完了しました。" * 400  # 4,000 characters, 12,000 bytes
    car.message("car-a", text=text, question=["ok"])
    wait_until(lambda: push.to("/push/alice-phone"), 5, "the push")
    (r,) = push.to("/push/alice-phone")
    assert len(r.body) <= 4096
    (note,) = push.messages("alice-phone")
    assert note["body"].endswith("…") and text.startswith(note["body"][:-1])
    assert len(note["body"]) > 1000 and note["token"]  # the answer still works


def test_a_channel_url_apprise_rejects_is_a_clear_error_and_nothing_is_stored(
        nrelay: Relay, caplog: pytest.LogCaptureFixture) -> None:
    alice = login(nrelay, "alice")
    caplog.set_level(logging.DEBUG)
    for url, error in (("bogus://secret-token-123", "not offered here"),
                       ("json://", "does not understand"),
                       ("ftp://user:pw@example.org", "not offered here"),
                       ("", "printable characters")):
        page = add_channel(alice, url)
        assert error in page, (url, page[-2000:])
    with nrelay.ctx.sessions() as s:
        assert s.scalars(select(NotifyChannel)).first() is None
    assert "secret-token-123" not in caplog.text


def test_a_private_address_is_refused_unless_allowed(tmp_path: Path, mosquitto: Mosquitto,
                                                     hook: Webhook, push: PushService) -> None:
    r = Relay(notify_config(tmp_path, mosquitto, allow_private_addresses=False), live_poll_s=1.0)
    populate(r)
    r.start()
    try:
        alice = login(r, "alice")
        assert "private or local address" in add_channel(alice, hook.url("hook"))
        assert "private or local address" in add_channel(alice, "json://10.1.2.3/x")
        assert subscribe(alice, push.subscription("p")).status_code == 400  # http, loopback
    finally:
        r.stop()


def test_a_channel_url_is_stored_encrypted_and_never_shown_or_logged_in_full(
        nrelay: Relay, car: CarPublisher, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "s3cr3t-webhook-id-0123456789"
    url = f"json://127.0.0.1:1/api/webhook/{secret}"  # port 1: nothing listens, it fails
    alice = login(nrelay, "alice")
    page = add_channel(alice, url)
    assert "Added json://127.0.0.1:1/api/web…/s3c…" in page
    car.message("car-a")
    wait_until(lambda: [n.attempts for n in rows(nrelay)] and rows(nrelay)[0].attempts >= 2, 5,
               "two failed attempts")
    page = alice.get("/settings").text
    with nrelay.ctx.sessions() as s:
        (channel,) = s.scalars(select(NotifyChannel))
        stored = channel.secret + channel.label
    row = rows(nrelay)[0]
    assert row.status == "pending" and row.last_error
    for text in (page, stored, caplog.text, row.last_error or ""):
        assert secret not in text and secret[:10] not in text
    db = Path(nrelay.config.database.url.removeprefix("sqlite:///"))
    assert secret.encode() not in b"".join(p.read_bytes() for p in db.parent.glob("relay.db*"))


def test_a_muted_user_or_vehicle_gets_nothing(nrelay: Relay, car: CarPublisher,
                                              hook: Webhook) -> None:
    alice = login(nrelay, "alice")
    add_channel(alice, hook.url("alice"))
    token = csrf_of(alice.get("/settings").text)
    alice.post("/settings/mute", data={"csrf": token, "vehicle": "car-a", "muted": "1"})
    car.message("car-a", text="while muted")
    time.sleep(1.5)
    assert hook.to("/alice") == [] and rows(nrelay) == []
    alice.post("/settings/mute", data={"csrf": token, "vehicle": "car-a", "muted": "0"})
    alice.post("/settings/mute", data={"csrf": token, "vehicle": "", "muted": "1"})
    car.message("car-a", text="all muted")
    time.sleep(1.5)
    assert hook.to("/alice") == []
    alice.post("/settings/mute", data={"csrf": token, "vehicle": "", "muted": "0"})
    car.message("car-a", text="on again")
    wait_until(lambda: hook.to("/alice"), 5, "the unmuted message")
    assert [p["message"].split("\n")[0] for p in hook.payloads("alice")] == ["on again"]
    # Someone else's car cannot be muted (nor probed).
    assert alice.post("/settings/mute", data={"csrf": token, "vehicle": "car-b",
                                              "muted": "1"}).status_code == 404


def test_a_subscription_must_be_well_formed(nrelay: Relay, push: PushService) -> None:
    alice = login(nrelay, "alice")
    good = push.subscription("x")
    for bad in ({**good, "keys": {"p256dh": "short", "auth": good["keys"]["auth"]}},
                {"endpoint": good["endpoint"]},
                {**good, "endpoint": "javascript:alert(1)//////"}):
        assert subscribe(alice, bad).status_code == 400
    token = csrf_of(alice.get("/settings").text)
    assert alice.post("/push/subscribe", json=good).status_code == 403  # no CSRF header
    assert alice.post("/push/subscribe", json=good, headers={"X-CSRF-Token": token}).json()["ok"]


def test_a_user_removes_only_their_own_channels_and_devices(nrelay: Relay, push: PushService) -> None:
    alice, bob = login(nrelay, "alice"), login(nrelay, "bob")
    add_channel(alice, "json://127.0.0.1:1/hook")
    assert subscribe(alice, push.subscription("alice-phone")).status_code < 300
    with nrelay.ctx.sessions() as s:
        (channel,) = s.scalars(select(NotifyChannel))
        (device,) = s.scalars(select(PushSubscription))
        ids = {"channels": channel.id, "devices": device.id}

    def remove(client: httpx.Client, what: str) -> None:
        token = csrf_of(client.get("/settings").text)
        r = client.post(f"/settings/{what}/delete", data={"csrf": token, "id": str(ids[what])},
                        follow_redirects=True)
        assert r.status_code == 200

    def counts() -> tuple[int, int]:
        with nrelay.ctx.sessions() as s:
            return len(list(s.scalars(select(NotifyChannel)))), len(list(s.scalars(select(PushSubscription))))

    remove(bob, "channels")
    remove(bob, "devices")
    assert counts() == (1, 1)  # someone else's ids: nothing removed
    remove(alice, "channels")
    assert counts() == (0, 1)
    remove(alice, "devices")
    assert counts() == (0, 0)
