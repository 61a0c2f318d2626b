"""Fuzzing the relay's trust boundary: random and adversarial payloads (nesting, size, Unicode,
numbers, types, timestamps) into every ingest topic. In-process against the parser (many
examples, fast), and through the shipped mTLS Mosquitto into the running relay (bounded): the
worker stays up, every message ends stored or counted and is acknowledged only then, the next
good messages are stored, and the pages render."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mqtt_helpers import Mosquitto
from relay_testkit import (
    base_url,
    cert_car,
    count_rows,
    pages_render,
    persona_message,
    wait_until,
)

from relay.ingest import Dropped, Limits, parse
from relay.models import Message

LEAVES = ["messages", "state", "status", "fleet", "dealer/appointment", "cmd/ping/result",
          "cmd/reply/result"]
SOC = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed"

# -- adversarial pieces ---------------------------------------------------------------------

deep_json = st.integers(1, 3000).flatmap(lambda n: st.sampled_from([
    b"[" * n + b"]" * n, b'{"a":' * n + b"1" + b"}" * n, b"[" * n, b'{"a":[' * n]))
raw_numbers = st.sampled_from([b"1e999", b"-1e999", b"NaN", b"Infinity", b"-Infinity", b"-0",
                               b"1" + b"0" * 400, b"1" + b"0" * 5000, b"1e-400",
                               b"9007199254740993", b"0.1e308", b"01", b"1.", b".5"])
raw_strings = st.sampled_from([b'"\\ud800"', b'"\\udc00\\ud800"', b'"\\u0000"', b'"\\ud83d\\ude00"',
                               b'"\xff\xfe"', b'"\xed\xa0\x80"', b'"\x01\x1f"', b'"\\u2028"',
                               b'"' + b"x" * 70_000 + b'"'])
odd_zones = st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-14)),
                             timezone(timedelta(hours=5, minutes=45))])
timestamps = st.sampled_from([
    "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2099-01-01T00:00:00Z",
    "1970-01-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-11-22T02:00:00", "", "now",
    "2026-11-22T25:00:00Z", "2026-11-22T02:00:00+99:00", "2026-11-22T02:00:00.123456789Z",
]) | st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                  timezones=odd_zones).map(lambda d: d.isoformat())
odd_text = st.sampled_from(["\ud800", "a\udfffb", "\x00", "nul\x00", "\u2028", "\ufeff", "é" * 5000,
                            "<script>alert(1)</script>", "P0A80", "online", "Vehicle.Speed"])
leaves = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
          | odd_text | timestamps)
json_values = st.recursive(leaves, lambda kids: st.lists(kids, max_size=5)
                           | st.dictionaries(st.text(max_size=10) | odd_text, kids, max_size=5),
                           max_leaves=25)


def good_doc(leaf: str) -> dict[str, Any]:
    now = time.time() - 60
    ts = datetime.fromtimestamp(now, UTC).isoformat()
    return {
        "messages": persona_message("car-a", "charge.started", ts=now,
                                    data={"eta": ts, "soc": 17.5}, question=["ok", "later"]),
        "state": {"vehicle_id": "car-a", "ts": ts, "full": True,
                  "signals": {SOC: {"value": 50.0, "ts": ts, "stale": False},
                              "Vehicle.Diagnostics.DTCList": {"value": ["P0A80"]}}},
        "fleet": {"kind": "outbox.status", "vehicle_id": "car-a", "ts": ts,
                  "outbox": {"queued_total": 3, "oldest_age_s": 12.5,
                             "dropped": {"info": 1, "warning": 0}}},
        "dealer/appointment": {"vehicle_id": "car-a", "service_type": "periodic service",
                               "odometer_km": 15000, "active_dtcs": ["P0A80"]},
        "cmd/ping/result": {"id": "c1", "status": "completed", "reason": None, "ts": ts},
        "cmd/reply/result": {"id": "c2", "status": "rejected", "reason": "parked", "ts": ts},
    }.get(leaf, {})


@st.composite
def payloads(draw: st.DrawFn, leaf: str) -> bytes:
    """Bytes for one topic: noise, deep nesting, or a valid document with fields replaced,
    added, or spliced with raw adversarial JSON."""
    kind = draw(st.sampled_from(["binary", "deep", "mutated", "spliced", "spliced", "mutated",
                                 "oversized", "json"]))
    if kind == "binary":
        return draw(st.binary(max_size=300))
    if kind == "deep":
        return draw(deep_json)
    if kind == "oversized":
        return b"[" + b"1," * draw(st.integers(30_000, 40_000)) + b"1]"
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    doc = good_doc(leaf)
    if not doc:  # status: plain text
        return draw(st.sampled_from([b"online", b"offline", b"ONLINE ", b"\xff", b""])
                    | st.binary(max_size=20))
    fields = list(doc) + ["extra", "vehicle_id"]
    if kind == "mutated":
        doc.update(draw(st.dictionaries(st.sampled_from(fields), json_values | timestamps,
                                        min_size=1, max_size=3)))
        return json.dumps(doc).encode()
    field = draw(st.sampled_from(fields))
    doc[field] = "@@SPLICE@@"
    raw = draw(deep_json | raw_numbers | raw_strings)
    return json.dumps(doc).encode().replace(b'"@@SPLICE@@"', raw)


# -- in-process: the parser ----------------------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(st.data())
def test_any_payload_on_any_topic_is_a_record_or_a_counted_drop(data: st.DataObject) -> None:
    leaf = data.draw(st.sampled_from(LEAVES))
    payload = data.draw(payloads(leaf))
    now = datetime.now(UTC).replace(tzinfo=None)
    try:
        rec = parse(f"carfriend/v1/car-a/{leaf}", payload, Limits(), now)
    except Dropped as drop:
        assert drop.reason in ("oversized", "malformed-json", "too-deep", "invalid",
                               "vehicle-mismatch")
        return
    # Whatever passes can be written as JSON and read back the same (no NaN, no surrogates).
    body = rec.body if isinstance(rec.body, str | dict) else rec.body.model_dump(mode="json")
    text = json.dumps(body, allow_nan=False, ensure_ascii=False)
    text.encode("utf-8")
    assert json.loads(text) == body


# -- through the broker: the running relay -------------------------------------------------

@pytest.mark.slow
def test_the_relay_survives_fuzzing_through_the_mtls_broker(tls_relay, tls_broker: Mosquitto,
                                                            pki: Path) -> None:
    car = cert_car(tls_broker, pki, "car-a")
    ingest = tls_relay.ingest
    published = [0]

    def handled() -> int:
        return ingest.stored + sum(n for reason, n in ingest.dropped.items()
                                   if reason != "signals-over-cap")  # those count signals

    @settings(max_examples=300, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.data())
    def publish_one(data: st.DataObject) -> None:
        leaf = data.draw(st.sampled_from(LEAVES))
        car.publish(f"carfriend/v1/car-a/{leaf}", data.draw(payloads(leaf)))
        published[0] += 1
        assert ingest._worker.is_alive()

    try:
        publish_one()
        wait_until(lambda: handled() == published[0], 30,
                   f"all {published[0]} fuzzed messages stored or counted")
        # Acknowledged exactly what was stored or counted, nothing before.
        wait_until(lambda: ingest.acked == handled(), 5, "every handled message acknowledged")
        assert ingest.acked == published[0]
        assert ingest.dropped["internal-error"] == 0 and ingest.dropped["store-failed"] == 0
        # The next good messages, of this car and of another, are stored.
        other = cert_car(tls_broker, pki, "car-b")
        try:
            goods = [car.message("car-a", "battery.low", ts=time.time() - 30),
                     other.message("car-b", "battery.low", ts=time.time() - 30)]
        finally:
            other.close()
        for good in goods:
            wait_until(lambda g=good: count_rows(tls_relay, Message, msg_id=g["id"]) == 1,
                       15, "a good message after the fuzzing")
        assert httpx.get(f"{base_url(tls_relay)}/healthz").status_code == 200
        pages_render(tls_relay)
    finally:
        car.close()

