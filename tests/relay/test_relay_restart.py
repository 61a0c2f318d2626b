"""Restarts: the relay killed (SIGKILL) in the middle of a burst, and the broker restarted,
lose nothing and store nothing twice."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mqtt_helpers import Mosquitto
from relay_testkit import (
    CarPublisher,
    persona_message,
    relay_config,
    start_relay_process,
    wait_until,
)
from sqlalchemy import func, select

from relay.admin import add_vehicles
from relay.db import make_engine, make_sessionmaker, migrate
from relay.models import Message
from relay.server import Relay

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    # Unbounded queue for offline sessions: the relay may be down while cars keep publishing.
    b = Mosquitto(extra_conf="max_queued_messages 0").start()
    yield b
    b.close()


def test_relay_killed_during_a_burst_loses_and_duplicates_nothing(
        tmp_path: Path, broker: Mosquitto, db_url: str | None) -> None:
    config = relay_config(tmp_path, broker, db_url, ingest={"batch_max": 50})
    engine = make_engine(config.database.url)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    with sessions() as s:
        add_vehicles(s, config, ["car-a"])

    def stored() -> tuple[int, int]:
        with sessions() as s:
            return (int(s.scalar(select(func.count()).select_from(Message)) or 0),
                    int(s.scalar(select(func.count(func.distinct(Message.msg_id)))) or 0))

    log = tmp_path / "relay.log"
    proc = start_relay_process(tmp_path / "relay.toml", log)
    car = CarPublisher(broker)
    total, t0 = 3000, 1_790_000_000.0
    try:
        wait_until(lambda: "subscribed" in log.read_text(), 20, "the relay to subscribe")
        for i in range(total):
            car.publish("carfriend/v1/car-a/messages",
                        persona_message("car-a", "battery.low", ts=t0 + i), wait=False)
            if i == total // 3:
                wait_until(lambda: stored()[0] > 100, 20, "the relay to store part of the burst")
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                killed_at = stored()[0]
        # Every second message again: the agent's outbox retries after a reconnect.
        for i in range(0, total, 2):
            car.publish("carfriend/v1/car-a/messages",
                        persona_message("car-a", "battery.low", ts=t0 + i), wait=False)
        car.publish("carfriend/v1/car-a/status", b"online")  # waits: all of the above are out
        assert 0 < killed_at < total
        proc = start_relay_process(tmp_path / "relay.toml", log)
        wait_until(lambda: stored()[0] >= total, 90, f"all {total} messages stored")
        time.sleep(1.0)  # anything still arriving would be a duplicate
        assert stored() == (total, total)
    finally:
        car.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()[-3000:]


def test_the_broker_restarting_loses_nothing(tmp_path: Path, broker: Mosquitto) -> None:
    # Mosquitto 2.0 does not restore an offline session's *shared* subscriptions after its own
    # restart, so a single Mosquitto node is run with plain (persistent) subscriptions.
    relay = Relay(relay_config(tmp_path, broker, mqtt={"shared_subscriptions": False}),
                  live_poll_s=1.0)
    with relay.ctx.sessions() as s:
        add_vehicles(s, relay.config, ["car-a"])
    relay.start()
    try:
        assert relay.ingest.connected.wait(10)
        car = CarPublisher(broker)
        for i in range(50):
            car.message("car-a", "battery.low", ts=1_790_000_000.0 + i)
        car.close()
        wait_until(lambda: relay.ingest.stored >= 50, 10, "the first 50")
        broker.stop()
        wait_until(lambda: not relay.ingest.connected.is_set(), 10, "the relay to notice")
        broker.start()
        car = CarPublisher(broker)
        for i in range(50, 100):
            car.message("car-a", "battery.low", ts=1_790_000_000.0 + i)
        car.close()
        wait_until(lambda: relay.ingest.connected.is_set(), 40, "the relay to reconnect")
        with relay.ctx.sessions() as s:
            count = lambda: s.scalar(select(func.count()).select_from(Message))  # noqa: E731
            wait_until(lambda: count() == 100, 20, "all 100 messages")
    finally:
        relay.stop()
