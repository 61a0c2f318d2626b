"""Poison payloads from one car's certificate, through the shipped mTLS listener: none stops the
ingest worker; each is counted, acknowledged, and the next message of another car is stored.
/healthz says when the ingest has stopped or lags."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from relay_testkit import (
    base_url,
    cert_car,
    count_rows,
    persona_message,
    populate,
    relay_config,
    wait_until,
)

from relay.ingest import ingest_problem
from relay.models import Message
from relay.server import Relay


def nested(depth: int) -> bytes:
    """JSON nested depth deep, built as text (json.dumps itself would recurse that deep)."""
    return b"[" * depth + b"1" + b"]" * depth


def deep_object(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def poisons() -> list[tuple[str, bytes]]:
    """(leaf, payload): each of these stopped every car's ingest in the security review."""
    msg = persona_message("car-a", "battery.low")
    deep = b"[" * 2000 + b"]" * 2000
    state = {"vehicle_id": "car-a", "ts": "2026-11-22T02:00:00Z", "full": True, "signals": {}}
    return [
        ("messages", deep),
        ("messages", json.dumps({**msg, "ts": "0001-01-01T00:00:00+14:00"}).encode()),
        ("messages", json.dumps({**msg, "ts": "9999-12-31T23:59:59-14:00"}).encode()),
        ("messages", b'{"data": {"x": ' + nested(975) + b"}}"),
        ("messages", json.dumps({**msg, "data": {}}).encode().replace(b'"data": {}', b'"data": '
                                                                      + deep_object(190))),
        ("state", json.dumps({**state, "ts": "0001-01-01T00:00:00+14:00"}).encode()),
        ("state", deep),
        ("cmd/ping/result", json.dumps({"id": "c", "status": "completed",
                                        "ts": "0001-01-01T00:00:00+14:00"}).encode()),
        ("fleet", b'{"kind": "outbox.status", "deep": ' + nested(975) + b"}"),
        ("dealer/appointment", b'{"service_type": "x", "deep": '
         + nested(975) + b"}"),
        ("fleet", deep),
        ("status", b"\xff" * 100),
    ]


def test_no_single_payload_stops_the_ingest_of_other_cars(tls_relay: Relay, tls_broker,
                                                          pki: Path) -> None:
    attacker = cert_car(tls_broker, pki, "car-a")
    victim = cert_car(tls_broker, pki, "car-b")
    try:
        for i, (leaf, payload) in enumerate(poisons()):
            attacker.publish(f"carfriend/v1/car-a/{leaf}", payload)
            good = victim.message("car-b", "battery.low", ts=time.time() - 600 + i)
            wait_until(lambda g=good: count_rows(tls_relay, Message, msg_id=g["id"]) == 1, 15,
                       f"car-b's message after poison {i} on {leaf}")
        ingest = tls_relay.ingest
        assert sum(ingest.dropped.values()) == len(poisons())
        assert ingest.stored == len(poisons())
        # Every poison was acknowledged (never redelivered to kill the worker again).
        wait_until(lambda: ingest.acked == 2 * len(poisons()), 5, "everything acknowledged")
        assert httpx.get(f"{base_url(tls_relay)}/healthz").status_code == 200
    finally:
        attacker.close()
        victim.close()


def test_healthz_turns_unhealthy_while_the_ingest_lags_and_recovers(tmp_path: Path,
                                                                    mosquitto) -> None:
    from relay_testkit import CarPublisher

    relay = Relay(relay_config(tmp_path, mosquitto, ingest={"max_lag_s": 1}), live_poll_s=1.0)
    populate(relay)
    relay.start()
    car = CarPublisher(mosquitto)
    lock = sqlite3.connect(relay.config.database.url.removeprefix("sqlite:///"), timeout=1)
    try:
        assert relay.ingest.connected.wait(30)
        url = f"{base_url(relay)}/healthz"
        assert httpx.get(url).status_code == 200
        lock.execute("BEGIN EXCLUSIVE")  # the database is busy: the worker waits on it
        msg = car.message("car-a", "battery.low")
        r = wait_until(lambda: (resp := httpx.get(url)).status_code == 503 and resp, 15,
                       "healthz reporting the lag")
        assert "ingest lags" in r.text
        lock.rollback()
        wait_until(lambda: count_rows(relay, Message, msg_id=msg["id"]) == 1, 40, "stored")
        wait_until(lambda: httpx.get(url).status_code == 200, 10, "healthy again")
    finally:
        lock.close()
        car.close()
        relay.stop()


@pytest.mark.parametrize(("alive", "connected", "idle_s", "lag_s", "problem"), [
    (True, True, 0.1, 0.0, None),
    (False, True, 0.1, 0.0, "ingest worker stopped"),
    (True, False, 0.1, 0.0, "broker disconnected"),
    (True, True, 0.1, 61.0, "ingest lags 61 s behind (limit 60 s)"),
    (True, True, 120.0, 0.0, "ingest worker stuck for 120 s"),
])
def test_ingest_problem_names_what_is_wrong(alive: bool, connected: bool, idle_s: float,
                                            lag_s: float, problem: str | None) -> None:
    assert ingest_problem(alive, connected, idle_s, lag_s, max_lag_s=60.0) == problem
