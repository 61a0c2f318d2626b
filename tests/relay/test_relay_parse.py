"""The ingest's checks (no broker): any topic and payload is either a record or a counted Dropped."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from relay_testkit import persona_message

from relay.ingest import Dropped, Limits, parse, parse_topic

NOW = datetime(2026, 12, 1, 12, 0, 0)
NOW_TS = NOW.replace(tzinfo=UTC).timestamp()
LIMITS = Limits()

TOPICS = ["carfriend/v1/car-a/messages", "carfriend/v1/car-a/state", "carfriend/v1/car-a/status",
          "carfriend/v1/car-a/cmd/reply/result", "carfriend/v1/car-a/dealer/appointment",
          "carfriend/v1/car-a/fleet"]
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                           lambda kids: st.lists(kids, max_size=4)
                           | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)


@given(st.sampled_from(TOPICS) | st.text(max_size=60), st.binary(max_size=300))
def test_random_bytes_on_any_topic_never_raise_anything_but_dropped(topic: str, payload: bytes) -> None:
    with contextlib.suppress(Dropped):
        parse(topic, payload, LIMITS, NOW)


@given(st.sampled_from(TOPICS), json_values)
def test_random_json_never_raises_anything_but_dropped(topic: str, doc: object) -> None:
    with contextlib.suppress(Dropped):
        parse(topic, json.dumps(doc).encode(), LIMITS, NOW)


@given(st.dictionaries(st.sampled_from(["id", "ts", "kind", "severity", "visibility", "text",
                                        "question", "data", "vehicle_id"]), json_values))
def test_a_message_with_fields_replaced_is_a_record_or_dropped(changes: dict) -> None:
    try:
        rec = parse(TOPICS[0], json.dumps({**persona_message("car-a", ts=NOW_TS), **changes}).encode(),
                    LIMITS, NOW)
    except Dropped:
        return
    assert rec.vehicle_id == "car-a" and rec.body.vehicle_id == "car-a"


def test_topics_map_to_their_tables() -> None:
    assert parse_topic("carfriend/v1/car-a/cmd/climate.start/result") == ("car-a", "result",
                                                                          "climate.start")
    assert parse_topic("carfriend/v1/car-a/dealer/appointment") == ("car-a", "appointment", "")
    for bad in ("carfriend/v2/car-a/messages", "carfriend/v1/car-a/cmd/x", "x", "carfriend/v1/a/b/c"):
        with pytest.raises(Dropped):
            parse_topic(bad)


def test_a_newer_agents_extra_fields_are_ignored_not_dropped() -> None:
    msg = {**persona_message("car-a", ts=NOW_TS - 60), "mood": "cheerful"}
    assert parse(TOPICS[0], json.dumps(msg).encode(), LIMITS, NOW).body.id == msg["id"]


def drop_reason(topic: str, doc: dict | bytes) -> str | None:
    payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    try:
        parse(topic, payload, LIMITS, NOW)
    except Dropped as drop:
        return drop.reason
    return None


MSG = persona_message("car-a", ts=NOW_TS - 60)
STATE = {"vehicle_id": "car-a", "ts": "2026-12-01T11:59:00Z", "full": True,
         "signals": {"Vehicle.Speed": {"value": 0.0, "ts": "2026-12-01T11:59:00Z", "stale": False}}}


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                                "1999-12-31T23:59:59Z", "2026-12-01T12:05:01Z", "2099-01-01T00:00:00Z",
                                "yesterday", 1764590400])
def test_timestamps_outside_2000_to_a_few_minutes_ahead_are_invalid(ts: object) -> None:
    assert drop_reason(TOPICS[0], {**MSG, "ts": ts}) == "invalid"
    assert drop_reason(TOPICS[1], {**STATE, "ts": ts}) == "invalid"
    assert drop_reason(TOPICS[3], {"id": "c1", "status": "completed", "ts": ts}) == "invalid"


def test_a_timestamp_a_little_ahead_of_the_relays_clock_is_accepted() -> None:
    assert drop_reason(TOPICS[0], {**MSG, "ts": "2026-12-01T12:04:00+00:00"}) is None
    assert drop_reason(TOPICS[0], {**MSG, "ts": "2026-12-01T21:04:00+09:00"}) is None


@pytest.mark.parametrize(("field", "value"), [
    ("text", "nul\x00byte"), ("persona", "bell\x07"), ("data", {"eta": "x\x00"}),
    ("data", {"dropped": 10**401}), ("data", {"k\x00": 1}), ("question", ["ok", ""]),
    ("question", ["ok"] * 9), ("data", {"x": "y" * 4001}), ("data", {"n": [0] * 2001}),
])
def test_message_fields_with_bad_text_or_numbers_are_invalid(field: str, value: object) -> None:
    assert drop_reason(TOPICS[0], {**MSG, field: value}) == "invalid"


@pytest.mark.parametrize("raw", [b'"\\ud800"', b'"\\udfff tail"', b"1e999", b"NaN", b"-Infinity"])
def test_lone_surrogates_and_non_finite_numbers_never_pass(raw: bytes) -> None:
    payload = json.dumps({**MSG, "data": {"eta": 0}}).encode().replace(b'"eta": 0', b'"eta": ' + raw)
    assert drop_reason(TOPICS[0], payload) in ("malformed-json", "invalid")


def test_free_form_fields_are_bounded_in_depth_before_anything_stores_them() -> None:
    def deep(n: int) -> bytes:
        return b"[" * n + b"]" * n

    ok = json.dumps({**MSG, "data": {}}).encode()
    assert drop_reason(TOPICS[0], ok.replace(b'"data": {}', b'"data": {"x": ' + deep(7) + b"}")) is None
    assert drop_reason(TOPICS[0], ok.replace(b'"data": {}', b'"data": {"x": ' + deep(8) + b"}")) \
        == "invalid"
    assert drop_reason(TOPICS[0], ok.replace(b'"data": {}', b'"data": ' + deep(5000))) == "too-deep"
    assert drop_reason(TOPICS[5], b'{"kind": "x", "e": ' + deep(5) + b"}") == "invalid"
    assert drop_reason(TOPICS[4], b'{"service_type": "x", "e": ' + deep(5) + b"}") == "invalid"


@pytest.mark.parametrize("signals", [
    {"Vehicle.Speed": {"value": 10**401}},
    {"Vehicle.Speed": {"value": "5" * 65}},
    {"Vehicle.Diagnostics.DTCList": {"value": ["P0A80\ud800"]}},
    {"Vehicle.Speed": {"value": {"nested": 1}}},
    {"NotVss.Speed": {"value": 1}},
    {"Vehicle.Speed": {"value": 1, "ts": "2099-01-01T00:00:00Z"}},
    {f"Vehicle.S{i}": {"value": i} for i in range(65)},
])
def test_state_documents_take_only_vss_paths_and_plain_values(signals: dict) -> None:
    assert drop_reason(TOPICS[1], {**STATE, "signals": signals}) in ("invalid", "malformed-json")


@pytest.mark.parametrize("outbox", [{"dropped": {"info": 1e999}}, {"dropped": {"info": 1.5}},
                                    {"queued_total": -1}, {"oldest_age_s": "long"},
                                    {"queued_total": 10**401}])
def test_fleet_outbox_reports_carry_counts_only(outbox: dict) -> None:
    doc = {"kind": "outbox.status", "vehicle_id": "car-a", "outbox": outbox}
    assert drop_reason(TOPICS[5], doc) == "invalid"
