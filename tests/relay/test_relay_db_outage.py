"""A database that goes away in the middle of a burst (issue 16, "Bad input"): PostgreSQL
stopped (pg_ctl -m fast, then -m immediate) while a car keeps publishing, then started again;
SQLite locked by another process, and its files made unwritable (chattr +i, as a file system
remounted read-only: SQLite reports a disk I/O error). The ingest waits with backoff and says so once, acknowledges
nothing it has not committed (so every message is stored exactly once afterwards, by the same
relay or by the next one), /healthz answers 503 naming the database, the pages answer a 503 page
that says the database is unavailable (no 500, no traceback), and the worker lives on."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mqtt_helpers import Mosquitto
from pg_helpers import PostgresCluster
from relay_testkit import (
    CarPublisher,
    SseReader,
    base_url,
    csrf_of,
    login,
    persona_message,
    populate,
    relay_config,
    wait_until,
)
from sqlalchemy import func, select

from relay.models import Message
from relay.server import Relay

pytestmark = pytest.mark.slow
T0 = 1_790_000_000.0


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    # Mosquitto's default max_inflight_messages (20): most of an outage's traffic waits on the
    # broker, the rest un-acknowledged in the relay. Unbounded queue: nothing is dropped there.
    b = Mosquitto(extra_conf="max_queued_messages 0").start()
    yield b
    b.close()


@pytest.fixture
def own_pg() -> Iterator[PostgresCluster]:
    """A cluster of this test's own: it is stopped and started under the relay."""
    cluster = PostgresCluster().start()
    yield cluster
    cluster.close()


def stored(relay: Relay) -> tuple[int, int]:
    """(rows, distinct message ids) of car-a's messages."""
    with relay.ctx.sessions() as s:
        q = select(func.count(), func.count(func.distinct(Message.msg_id))).where(
            Message.vehicle_id == "car-a")
        rows, distinct = s.execute(q).one()
    return int(rows), int(distinct)


def publish(car: CarPublisher, start: int, n: int) -> None:
    for i in range(start, start + n):
        car.publish("carfriend/v1/car-a/messages",
                    persona_message("car-a", "trip.summary", ts=T0 + i, text=f"MSG-{i:05d}"))


def healthz(relay: Relay) -> httpx.Response:
    return httpx.get(base_url(relay) + "/healthz", timeout=20)


def outage_lines(caplog: pytest.LogCaptureFixture) -> tuple[int, int]:
    """Log lines of the ingest at INFO or above: (database went away, database came back)."""
    records = [r for r in caplog.records if r.name == "relay.mqtt" and r.levelno >= logging.INFO]
    down = sum("database unavailable" in r.getMessage() for r in records)
    back = sum("database available again" in r.getMessage() for r in records)
    return down, back


def assert_unavailable_page(response: httpx.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text[-300:])
    assert "database is unavailable" in response.text
    assert response.headers.get("retry-after") == "30"
    assert "Traceback" not in response.text and "psycopg" not in response.text


def test_postgresql_stopped_mid_burst_loses_duplicates_and_acknowledges_nothing(
        tmp_path: Path, broker: Mosquitto, own_pg: PostgresCluster,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    config = relay_config(tmp_path, broker, own_pg.create_database(),
                          database={"timeout_s": 3}, ingest={"batch_max": 20})
    relay = Relay(config, live_poll_s=1.0)
    populate(relay)
    relay.start()
    car = CarPublisher(broker)
    relay2: Relay | None = None
    try:
        assert relay.ingest.connected.wait(30)
        alice = login(relay, "alice")
        assert alice.get("/v/car-a").status_code == 200
        assert healthz(relay).status_code == 200
        live = SseReader(login(relay, "alice"), "/v/car-a/events")  # open across the outage
        wait_until(lambda: live.of("state"), 10, "the live stream to start")

        # 1. Stopped (fast: sessions terminated) while a burst of 300 is being stored; 300 more
        # published while it is down.
        publish(car, 0, 300)
        own_pg.stop("fast")
        publish(car, 300, 300)
        wait_until(lambda: relay.ingest.db_down_since is not None, 20, "the ingest to notice")
        health = healthz(relay)
        assert health.status_code == 503 and "database unavailable" in health.text, health.text
        assert_unavailable_page(alice.get("/v/car-a"))
        assert_unavailable_page(alice.get("/fleet"))  # not an operator: still the database first
        fresh = httpx.Client(base_url=base_url(relay), timeout=20)
        token = csrf_of(fresh.get("/login").text)  # the form itself needs no database
        assert_unavailable_page(fresh.post("/login", data={
            "csrf": token, "username": "alice", "password": "whatever-it-is"}))
        acked = relay.ingest.acked
        time.sleep(3)  # several retries
        assert relay.ingest.acked == acked, "acknowledged while the database was down"
        assert relay.ingest.db_retries >= 2
        assert relay.ingest._worker.is_alive()
        assert outage_lines(caplog) == (1, 0), "the outage is logged once, not per retry/message"
        noise = [r.getMessage()[:120] for r in caplog.records
                 if r.name.startswith("relay") and r.levelno >= logging.WARNING]
        # The ingest, the live listener, the notifier: one line each; one per page asked for.
        assert len(noise) <= 8, noise
        assert not [r for r in caplog.records if r.name == "relay.mqtt" and "dropped" in
                    r.getMessage()], "a message was dropped during the outage"

        own_pg.resume()
        wait_until(lambda: stored(relay) == (600, 600), 60, "600 messages stored once")
        wait_until(lambda: healthz(relay).status_code == 200, 20, "/healthz to recover")
        page = alice.get("/v/car-a")
        assert page.status_code == 200 and "MSG-00599" in page.text
        # The stream opened before the outage stayed open through it and caught up.
        wait_until(lambda: any("MSG-00599" in d for d in live.of("item")), 20,
                   "the last message on the stream opened before the outage")
        assert live._thread.is_alive(), "the live stream was closed by the outage"
        live.close()
        assert outage_lines(caplog) == (1, 1)
        assert relay.ingest.dropped == {}, relay.ingest.dropped
        assert relay.ingest.db_outages == 1

        # 2. Stopped hard (immediate) and the relay itself stopped while the database is down:
        # it acknowledged nothing of what it had not stored, so the next relay (same client id,
        # same session) gets it all from the broker.
        own_pg.stop("immediate")
        publish(car, 600, 200)
        wait_until(lambda: relay.ingest.db_down_since is not None, 20, "the ingest to notice")
        began = time.monotonic()
        relay.stop()
        assert time.monotonic() - began < 15, "stopping waited for the database"
        own_pg.resume()
        relay2 = Relay(config, live_poll_s=1.0).start()
        # The test cluster runs with synchronous_commit=off: without the relay's own
        # synchronous_commit=on, the last batch acknowledged before the crash was lost here.
        wait_until(lambda: stored(relay2) == (800, 800), 60, "800 messages stored once")
        assert relay2.ingest.dropped == {}
        assert healthz(relay2).status_code == 200
    finally:
        car.close()
        if relay2 is not None:
            relay2.stop()
        else:
            relay.stop()


def test_a_locked_sqlite_database_holds_the_ingest_back_and_the_pages_say_so(
        tmp_path: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    """Another process (a sqlite3 shell, a backup) holds the write lock longer than the
    relay's [database] timeout_s: the ingest retries, acknowledges nothing, stores all after."""
    caplog.set_level(logging.INFO)
    config = relay_config(tmp_path, broker, database={"timeout_s": 0.5})
    relay = Relay(config, live_poll_s=1.0)
    populate(relay)
    relay.start()
    car = CarPublisher(broker)
    holder = sqlite3.connect(tmp_path / "relay.db", isolation_level=None)
    try:
        assert relay.ingest.connected.wait(30)
        alice = login(relay, "alice")
        holder.execute("BEGIN IMMEDIATE")  # the write lock, until ROLLBACK
        publish(car, 0, 100)
        wait_until(lambda: relay.ingest.db_down_since is not None, 20, "the ingest to notice")
        health = healthz(relay)
        assert health.status_code == 503 and "database unavailable" in health.text, health.text
        assert "database is locked" in relay.ingest.db_error
        # Reading pages go on (WAL: readers never wait for the writer); a write is refused
        # with the 503 page.
        assert alice.get("/v/car-a").status_code == 200
        fresh = httpx.Client(base_url=base_url(relay), timeout=20)
        token = csrf_of(fresh.get("/login").text)
        assert_unavailable_page(fresh.post("/login", data={
            "csrf": token, "username": "alice", "password": "correct-horse-battery"}))
        acked = relay.ingest.acked
        time.sleep(2)
        assert relay.ingest.acked == acked
        assert relay.ingest._worker.is_alive()
        holder.execute("ROLLBACK")
        wait_until(lambda: stored(relay) == (100, 100), 60, "100 messages stored once")
        wait_until(lambda: healthz(relay).status_code == 200, 20, "/healthz to recover")
        assert outage_lines(caplog) == (1, 1)
        assert relay.ingest.dropped == {}
    finally:
        holder.close()
        car.close()
        relay.stop()


def chattr(flag: str, *paths: Path) -> bool:
    """Set or clear the immutable attribute (root with CAP_LINUX_IMMUTABLE on ext4 and the like):
    a file even root cannot write, as on a file system remounted read-only."""
    done = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, check=False)
    return done.returncode == 0


def test_a_read_only_sqlite_database_holds_the_ingest_back_until_it_is_writable_again(
        tmp_path: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    relay = Relay(relay_config(tmp_path, broker, database={"timeout_s": 0.5}), live_poll_s=1.0)
    populate(relay)
    relay.start()
    car = CarPublisher(broker)
    db = tmp_path / "relay.db"
    files = [db, db.with_name("relay.db-wal")]
    try:
        assert relay.ingest.connected.wait(30)
        publish(car, 0, 10)
        wait_until(lambda: stored(relay) == (10, 10), 20, "the first 10")
        if not chattr("+i", *files):
            pytest.skip("chattr +i is not permitted here (needs root and CAP_LINUX_IMMUTABLE)")
        publish(car, 10, 50)
        wait_until(lambda: relay.ingest.db_down_since is not None, 20, "the ingest to notice")
        assert healthz(relay).status_code == 503
        acked = relay.ingest.acked
        time.sleep(2)
        assert relay.ingest.acked == acked
        assert chattr("-i", *files)
        wait_until(lambda: stored(relay) == (60, 60), 60, "60 messages stored once")
        wait_until(lambda: healthz(relay).status_code == 200, 20, "/healthz to recover")
        assert outage_lines(caplog) == (1, 1)
        assert relay.ingest.dropped == {}
    finally:
        chattr("-i", *files)  # else nobody can delete the test's directory
        car.close()
        relay.stop()
