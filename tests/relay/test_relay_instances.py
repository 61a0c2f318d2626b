"""Two relay instances on one PostgreSQL behind one Mosquitto: every message stored once, a live
page on one instance shows what the other stored within a second, killing one loses nothing.

On Mosquitto each instance has its own plain persistent subscription (the broker cannot keep
cars out of a share group, docs/security.md), so both receive every message and the database's
unique keys store it once: the work is duplicated, the availability is not lost."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mqtt_helpers import Mosquitto
from relay_testkit import (
    CarPublisher,
    SseReader,
    login,
    on_backends,
    persona_message,
    populate,
    relay_config,
    start_relay_process,
    wait_until,
)
from sqlalchemy import func, select

from relay.models import Message
from relay.server import Relay

pytestmark = [pytest.mark.slow, on_backends("postgresql")]


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    b = Mosquitto(extra_conf="max_queued_messages 0\nmax_inflight_messages 200").start()
    yield b
    b.close()


def stored(relay: Relay) -> tuple[int, int]:
    """(rows, distinct message ids) in the messages table."""
    with relay.ctx.sessions() as s:
        return (int(s.scalar(select(func.count()).select_from(Message)) or 0),
                int(s.scalar(select(func.count(func.distinct(Message.msg_id)))) or 0))


def test_two_instances_store_each_message_once_and_show_what_the_other_stored_within_1_s(
        tmp_path: Path, broker: Mosquitto, db_url: str) -> None:
    # A 30 s poll: anything faster than that on B came through PostgreSQL's NOTIFY.
    a = Relay(relay_config(tmp_path / "a", broker, db_url, web={"live_poll_s": 30}))
    populate(a)
    b = Relay(relay_config(tmp_path / "b", broker, db_url, web={"live_poll_s": 30}))
    a.start(), b.start()
    car = CarPublisher(broker)
    try:
        assert a.ingest.connected.wait(20) and b.ingest.connected.wait(20)
        assert a.live.listening.wait(10) and b.live.listening.wait(10)
        t0 = time.time() - 600
        for i in range(300):
            car.publish("carfriend/v1/car-a/messages",
                        persona_message("car-a", "battery.low", ts=t0 + i), wait=False)
        car.publish("carfriend/v1/car-a/status", b"online")  # waits: all of the above are out
        wait_until(lambda: a.ingest.stored >= 301 and b.ingest.stored >= 301, 30,
                   "both instances to process the burst")
        assert stored(a) == (300, 300)
        # The duplicated work of plain subscriptions: each instance processed all 300.
        assert a.ingest.stored == b.ingest.stored == 301

        live = SseReader(login(b, "alice"), "/v/car-a/events?after=300")
        wait_until(lambda: live.of("state"), 10, "the live stream on B to start")
        b.ingest.stop()  # from now on only A ingests; B only serves pages
        latencies = []
        for i in range(10):
            text = f"ONLY-A-STORED-{i}"
            sent = time.monotonic()
            car.message("car-a", "battery.low", text=text)
            wait_until(lambda t=text: any(t in d for d in live.of("item")), 5, f"{text} on B")
            latencies.append(time.monotonic() - sent)
        live.close()
        assert b.ingest.stored == 301  # B stored none of them
        assert max(latencies) < 1.0, latencies
    finally:
        car.close()
        a.stop(), b.stop()


def test_killing_one_instance_loses_nothing_and_its_return_duplicates_nothing(
        tmp_path: Path, broker: Mosquitto, db_url: str) -> None:
    b = Relay(relay_config(tmp_path / "b", broker, db_url, ingest={"batch_max": 50}))
    populate(b)
    relay_config(tmp_path / "a", broker, db_url, ingest={"batch_max": 50})
    log = tmp_path / "a" / "relay.log"
    proc = start_relay_process(tmp_path / "a" / "relay.toml", log)
    b.start()
    car = CarPublisher(broker)
    total, t0 = 2000, time.time() - 3600
    try:
        wait_until(lambda: "subscribed" in log.read_text(), 20, "instance A to subscribe")
        assert b.ingest.connected.wait(20)
        for i in range(total):
            car.publish("carfriend/v1/car-a/messages",
                        persona_message("car-a", "battery.low", ts=t0 + i), wait=False)
            if i == total // 4:
                wait_until(lambda: stored(b)[0] > 100, 20, "part of the burst stored")
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        car.publish("carfriend/v1/car-a/status", b"online")
        wait_until(lambda: stored(b)[0] >= total, 60, f"all {total} messages (B alone)")
        # B's pages keep working while A is gone.
        assert httpx.get(f"http://127.0.0.1:{b.config.web.port}/healthz").text == "ok"
        # A comes back and is redelivered what it had not acknowledged: nothing twice.
        proc = start_relay_process(tmp_path / "a" / "relay.toml", log)
        wait_until(lambda: log.read_text().count("subscribed") >= 2, 20, "A to come back")
        time.sleep(2.0)
        assert stored(b) == (total, total)
    finally:
        car.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, log.read_text()[-3000:]
        b.stop()
