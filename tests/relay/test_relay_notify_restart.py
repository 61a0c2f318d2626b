"""A relay killed (SIGKILL) between the ingest and the delivery of notifications loses none:
messages stored while no fan-out ran, and deliveries cut off mid-way, all arrive after a restart
(at least once; how many twice is printed)."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mqtt_helpers import Mosquitto
from notify_kit import PushService, Webhook
from relay_testkit import CarPublisher, persona_message, relay_config, wait_until
from relay_testkit import start_relay_process as start_relay
from sqlalchemy import func, select

from relay.admin import add_user, add_vehicles, grant
from relay.db import make_engine, make_sessionmaker, migrate
from relay.models import Message, NotifyChannel, PushSubscription
from relay.notify.secrets import encrypt, load_channel_key

pytestmark = pytest.mark.slow


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    b = Mosquitto(extra_conf="max_queued_messages 0").start()  # keeps what a dead relay misses
    yield b
    b.close()
T0 = time.time() - 600


def write_config(tmp: Path, broker: Any, enabled: bool) -> Any:
    return relay_config(tmp, broker, mqtt={"client_id": "relay-under-test"},  # one session
                        notify={"enabled": enabled, "allow_private_addresses": True,
                                "retry_s": 0.2, "timeout_s": 2.0, "workers": 1})


def test_a_relay_killed_between_ingest_and_delivery_loses_no_notification(
        tmp_path: Path, broker: Any) -> None:
    push, hook = PushService(), Webhook()
    config = write_config(tmp_path, broker, enabled=True)
    sessions = make_sessionmaker(make_engine(config.database.url))
    migrate(sessions.kw["bind"])
    with sessions() as s:
        add_vehicles(s, config, ["car-a"])
        add_user(s, "alice", "correct-horse-battery")
        grant(s, "alice", "owner", "car-a")
        sub = push.subscription("alice-phone")
        s.add(PushSubscription(user_id=1, endpoint=sub["endpoint"], p256dh=sub["keys"]["p256dh"],
                               auth=sub["keys"]["auth"]))
        s.add(NotifyChannel(user_id=1, scheme="json", label="json://…",
                            secret=encrypt(load_channel_key(config.notify), hook.url("alice"))))
        s.commit()

    def stored() -> int:
        with sessions() as s:
            return int(s.scalar(select(func.count()).select_from(Message)) or 0)

    log, car, ids = tmp_path / "relay.log", CarPublisher(broker), []
    try:
        # 1. Notifications off: 20 messages are stored and no fan-out runs; killed.
        write_config(tmp_path, broker, enabled=False)
        proc = start_relay(tmp_path / "relay.toml", log)
        wait_until(lambda: "subscribed" in log.read_text(), 20, "the relay to subscribe")
        for i in range(20):
            ids.append(car.message("car-a", text=f"message {i}", ts=T0 + i)["id"])
        wait_until(lambda: stored() == 20, 20, "20 stored")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # 2. On, with a slow push service: killed in the middle of the deliveries.
        push.respond = lambda n: (201, 0.15)
        write_config(tmp_path, broker, enabled=True)
        proc = start_relay(tmp_path / "relay.toml", log)
        for i in range(20, 40):
            msg = persona_message("car-a", text=f"message {i}", ts=T0 + i)
            car.publish("carfriend/v1/car-a/messages", msg, wait=False)
            ids.append(msg["id"])
        wait_until(lambda: len(push.received) >= 8, 30, "some pushes delivered")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        delivered_before = len(push.received)
        assert delivered_before < 40, "the kill came too late to cut deliveries off"
        # 3. Restarted: everything arrives.
        push.respond = lambda n: (201, 0.0)
        proc = start_relay(tmp_path / "relay.toml", log)
        wait_until(lambda: {m["message_id"] for m in push.messages("alice-phone")} == set(ids),
                   60, "every message pushed")
        wait_until(lambda: {p["message"].split("\n")[0] for p in hook.payloads("alice")}
                   == {f"message {i}" for i in range(40)}, 60, "every message on the webhook")
        time.sleep(1.0)
        twice = [k for k, n in Counter(m["message_id"] for m in push.messages("alice-phone")).items()
                 if n > 1]
        print(f"killed after {delivered_before} pushes; {len(twice)} pushed twice")
        assert len(twice) <= 2  # at most what the single sender had in flight at the kill
        assert stored() == 40
    finally:
        car.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()[-3000:]
        push.close()
        hook.close()
