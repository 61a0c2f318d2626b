"""The health document: SocketCAN error frames -> controller state, rates between samples, the model's bounds."""

from __future__ import annotations

import json

import pytest
from frames import ROOT
from pydantic import ValidationError

from agent.core.health import (
    BusErrorState,
    BusHealth,
    HealthMeter,
    HealthReport,
    Sample,
    health_json_schema,
)

# linux/can/error.h
CRTL, BUSOFF, RESTARTED, PROT = 0x004, 0x040, 0x100, 0x008


def crtl(status: int) -> tuple[int, bytes]:
    return CRTL, bytes([0, status, 0, 0, 0, 0, 0, 0])


def test_error_frames_walk_the_controller_through_warning_passive_bus_off_and_back() -> None:
    bus = BusErrorState()
    assert bus.state == "active"
    bus.on_error_frame(*crtl(0x08))  # TX_WARNING
    assert bus.state == "error_warning"
    bus.on_error_frame(*crtl(0x20))  # TX_PASSIVE
    assert bus.state == "error_passive"
    bus.on_error_frame(PROT, bytes(8))  # a protocol violation alone says nothing about the state
    assert bus.state == "error_passive"
    bus.on_error_frame(BUSOFF, bytes(8))
    bus.on_error_frame(BUSOFF | CRTL, bytes(8))  # still the same bus-off
    assert bus.state == "bus_off" and bus.bus_off_count == 1
    bus.on_error_frame(RESTARTED, bytes(8))
    assert bus.state == "active"
    bus.on_error_frame(BUSOFF, bytes(8))
    assert bus.bus_off_count == 2 and bus.error_frames == 7
    bus.reopened()
    assert bus.state == "active"
    bus.on_error_frame(*crtl(0x10))  # RX_PASSIVE
    bus.on_error_frame(*crtl(0x40))  # back to error-active
    assert bus.state == "active"


def test_an_error_frame_without_a_status_byte_is_counted_and_changes_nothing() -> None:
    bus = BusErrorState()
    bus.on_error_frame(CRTL, b"")
    bus.on_error_frame(0, b"")  # python-can's virtual and slcan error frames carry no class
    assert bus.state == "active" and bus.error_frames == 2


def report(meter: HealthMeter, sample: Sample, **over: object) -> HealthReport:
    counters = {"frames": sample.frames, "decoded": 10, "unchanged": 0, "messages": 0,
                "dropped": {"unknown_id": 3, "error_frame": 1}}
    bus = BusHealth(interface="virtual", channel="x", state="active", error_frames=1, bus_off_count=0)
    outbox = {"queued_total": 2, "oldest_age_s": 12.5, "dropped": {"info": 0, "warning": 0}}
    kwargs: dict = {"counters": counters, "bus": bus, "outbox": outbox, "mqtt_sent": 7, **over}
    return meter.report(1_800_000_000.0, sample, **kwargs)


def test_rates_are_measured_between_two_samples_and_uptime_from_the_first() -> None:
    meter = HealthMeter("car-1", "1.2.3", Sample(mono=100.0, cpu_s=5.0, rss_bytes=1 << 20, frames=1000))
    r = report(meter, Sample(mono=160.0, cpu_s=8.0, rss_bytes=2 << 20, frames=61_000))
    assert r.frames.per_s == 1000.0 and r.process.cpu_pct == 5.0 and r.uptime_s == 60.0
    assert r.interval_s == 60.0 and r.frames.total == 61_000 and r.outbox.depth == 2
    assert r.polls.answered is None and r.polls.timed_out is None  # no diagnostic polling yet
    r2 = report(meter, Sample(mono=220.0, cpu_s=8.0, rss_bytes=None, frames=61_000))
    assert r2.frames.per_s == 0.0 and r2.process.cpu_pct == 0.0 and r2.uptime_s == 120.0
    assert r2.ts == "2027-01-15T08:00:00.000Z"


def test_counters_that_went_backwards_give_no_negative_rate() -> None:
    meter = HealthMeter("car-1", "1.2.3", Sample(mono=0.0, cpu_s=5.0, rss_bytes=None, frames=500))
    r = report(meter, Sample(mono=10.0, cpu_s=4.0, rss_bytes=None, frames=100))
    assert r.frames.per_s == 0.0 and r.process.cpu_pct == 0.0


def test_the_document_round_trips_through_its_own_strict_model() -> None:
    meter = HealthMeter("car-1", "1.2.3", Sample(mono=0.0, cpu_s=0.0, rss_bytes=None, frames=0))
    r = report(meter, Sample(mono=300.0, cpu_s=1.5, rss_bytes=50_000_000, frames=3000))
    doc = json.loads(r.model_dump_json())
    assert HealthReport.model_validate(doc) == r
    assert set(doc) == {"vehicle_id", "ts", "version", "uptime_s", "interval_s", "frames", "bus", "outbox",
                        "polls", "process", "mqtt_sent"}
    for bad in ({"uptime_s": -1}, {"extra": 1}, {"uptime_s": float("nan")},
                {"bus": {**doc["bus"], "state": "on fire"}}, {"frames": {**doc["frames"], "total": -5}}):
        with pytest.raises(ValidationError):
            HealthReport.model_validate({**doc, **bad})


def test_docs_health_schema_json_is_the_models_schema() -> None:
    text = (ROOT / "docs" / "health.schema.json").read_text()
    assert json.loads(text) == health_json_schema()


def test_the_example_in_docs_topics_md_is_a_valid_health_document() -> None:
    text = (ROOT / "docs" / "topics.md").read_text().split("## `health`", 1)[1]
    example = text.split("```json", 1)[1].split("```", 1)[0]
    report = HealthReport.model_validate_json(example)
    assert report.bus.state == "active" and report.polls.answered is None
    assert len(report.model_dump_json()) < 800  # the size [health] interval_s's data estimate rests on
