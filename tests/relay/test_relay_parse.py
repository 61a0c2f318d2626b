"""The ingest's checks (no broker): any topic and payload is either a record or a counted Dropped."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from relay_testkit import persona_message

from relay.ingest import Dropped, parse, parse_topic

TOPICS = ["carfriend/v1/car-a/messages", "carfriend/v1/car-a/state", "carfriend/v1/car-a/status",
          "carfriend/v1/car-a/cmd/reply/result", "carfriend/v1/car-a/dealer/appointment",
          "carfriend/v1/car-a/fleet"]
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                           lambda kids: st.lists(kids, max_size=4)
                           | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)


@given(st.sampled_from(TOPICS) | st.text(max_size=60), st.binary(max_size=300))
def test_random_bytes_on_any_topic_never_raise_anything_but_dropped(topic: str, payload: bytes) -> None:
    with contextlib.suppress(Dropped):
        parse(topic, payload, 65536)


@given(st.sampled_from(TOPICS), json_values)
def test_random_json_never_raises_anything_but_dropped(topic: str, doc: object) -> None:
    with contextlib.suppress(Dropped):
        parse(topic, json.dumps(doc).encode(), 65536)


@given(st.dictionaries(st.sampled_from(["id", "ts", "kind", "severity", "visibility", "text",
                                        "question", "data", "vehicle_id"]), json_values))
def test_a_message_with_fields_replaced_is_a_record_or_dropped(changes: dict) -> None:
    try:
        rec = parse(TOPICS[0], json.dumps({**persona_message("car-a"), **changes}).encode(), 65536)
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
    msg = {**persona_message("car-a"), "mood": "cheerful"}
    assert parse(TOPICS[0], json.dumps(msg).encode(), 65536).body.id == msg["id"]
