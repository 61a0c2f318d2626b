"""Remote commands: signed, fresh, replay-proof, bounded, parked-only; no frame unless accepted."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import can
import pytest
from frames import EV_CONFIG
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.cli.command import signed_payload
from agent.commands.protocol import interlock, parse
from agent.commands.runner import CommandMemory, CommandRunner
from agent.core import vss
from agent.core.errors import CommandError
from agent.core.state import VehicleState
from agent.profile.config import load_config
from agent.profile.vehicle import load_vehicle

KEY = b"k" * 32
VID = "carfriend-ev-0001"
NOW = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def payload(name: str, args: dict[str, Any], *, key: bytes = KEY, vehicle: str = VID, issued: datetime = NOW,
            cid: str | None = None) -> bytes:
    return json.dumps(signed_payload(key, vehicle, name, args, cid, issued)).encode()


def check(name: str, raw: bytes, now: datetime = NOW) -> Any:
    return parse(name, raw, vehicle_id=VID, key=KEY, now=now.timestamp(), window_s=120, skew_s=30, max_bytes=4096)


def test_a_signed_fresh_command_parses_with_checked_args() -> None:
    cmd = check("climate.start", payload("climate.start", {"target_c": 21}))
    assert cmd.args == {"target_c": 21.0} and cmd.actuating


@pytest.mark.parametrize(("raw", "reason"), [
    (payload("climate.start", {"target_c": 21}, key=b"x" * 32), "bad signature"),
    (payload("climate.start", {"target_c": 21}, vehicle="other-car"), "bad signature"),
    (payload("climate.stop", {}), "bad signature"),  # signed for another command name
    (payload("climate.start", {"target_c": 21}, issued=NOW - timedelta(seconds=200)), "expired"),
    (payload("climate.start", {"target_c": 21}, issued=NOW + timedelta(seconds=60)), "not yet valid"),
    (payload("climate.start", {"target_c": 45}), "less than or equal to 30"),
    (payload("climate.start", {"target_c": "21"}), "args.target_c"),
    (payload("climate.start", {"target_c": 21, "x": 1}), "args.x"),
    (b'{"id": "a", "issued_at": "2026-11-22T03:00:00Z", "args": {"target_c": 21}}', "missing or malformed signature"),
    (b"not json", "not JSON"),
    (b"[]", "not a JSON object"),
    (b'{"id": "a\\u202e", "issued_at": "x", "args": {}, "sig": "00"}', "id:"),
    (b"{" * 5000, "too large"),
])
def test_rejections_say_why(raw: bytes, reason: str) -> None:
    with pytest.raises(CommandError, match=reason):
        check("climate.start", raw)


def test_unknown_command_is_rejected() -> None:
    with pytest.raises(CommandError, match="unknown command"):
        check("doors.unlock", payload("doors.unlock", {}))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=20) | st.integers(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12).map(lambda v: json.dumps(v).encode())))
def test_any_payload_is_a_clean_rejection_never_a_crash(raw: bytes) -> None:
    with pytest.raises(CommandError):
        check("climate.start", raw)


def parked_state(now: float, speed: float = 0.0, gear: str = "P") -> VehicleState:
    state = VehicleState(stale_after={vss.SPEED: 5.0, vss.GEAR: 5.0})
    state.set(vss.SPEED, speed, now)
    state.set(vss.GEAR, gear, now)
    return state


def test_interlock_refuses_unless_parked_with_fresh_data() -> None:
    assert interlock(parked_state(100.0), 100.0) is None
    assert "moving" in interlock(parked_state(100.0, speed=12.0), 100.0)
    assert "gear is D" in interlock(parked_state(100.0, gear="D"), 100.0)
    assert "speed unknown or stale" in interlock(parked_state(100.0), 110.0)
    assert "speed unknown or stale" in interlock(VehicleState(), 0.0)


class Harness:
    """A CommandRunner on a real python-can virtual bus, with a second bus watching the frames."""

    def __init__(self, tmp: Path) -> None:
        config = load_config(EV_CONFIG, environ={})
        self.vehicle = load_vehicle(config)
        channel = f"cmd-test-{time.monotonic_ns()}"
        self.bus = can.Bus(interface="virtual", channel=channel)
        self.watch = can.Bus(interface="virtual", channel=channel)
        self.results: list[tuple[str, str, str, str]] = []
        self.said: list[tuple[str, dict]] = []
        self.memory = CommandMemory(tmp / "commands.db")
        self.runner = CommandRunner(config, self.vehicle, self.memory, KEY, send=self.bus.send,
                                    result=lambda *r: self.results.append(r), publish_state=lambda: None,
                                    say=lambda k, d: self.said.append((k, d)))

    def frames(self) -> list[can.Message]:
        out = []
        while (msg := self.watch.recv(0.05)) is not None:
            out.append(msg)
        return out

    def close(self) -> None:
        self.bus.shutdown()
        self.watch.shutdown()
        self.memory.close()


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    h = Harness(tmp_path)
    yield h
    h.close()


def test_accepted_command_sends_the_dbc_frame_then_completes_on_confirmation(harness: Harness) -> None:
    now = time.time()
    state = parked_state(now)
    harness.runner.handle(f"carfriend/v1/{VID}/cmd/climate.start",
                          payload("climate.start", {"target_c": 21}, issued=datetime.now(UTC)), state, now)
    frames = harness.frames()
    assert [f.arbitration_id for f in frames] == [0x6A0]
    decoded = harness.vehicle.find_message("TCU_ClimateCmd").decode(frames[0].data)
    assert str(decoded["ClimateRequest"]) == "ON" and decoded["TargetTempRequest"] == 21
    assert [r[2] for r in harness.results] == ["accepted"]
    state.set(vss.HVAC_ON, True, now + 0.5)
    state.set("Vehicle.Cabin.HVAC.Station.Row1.Driver.Temperature", 21.0, now + 0.5)
    harness.runner.poll(state, now + 0.5)
    assert [r[2] for r in harness.results] == ["accepted", "completed"]


def test_every_rejection_sends_no_frame(harness: Harness) -> None:
    now = time.time()
    fresh = datetime.now(UTC)
    topic = f"carfriend/v1/{VID}/cmd/"
    cases = [
        ("climate.start", payload("climate.start", {"target_c": 21}, key=b"w" * 32, issued=fresh), parked_state(now)),
        ("climate.start", payload("climate.start", {"target_c": 21}, issued=fresh), parked_state(now, speed=30)),
        ("climate.start", payload("climate.start", {"target_c": 21}, issued=fresh), parked_state(now - 60)),
        ("charge.limit", payload("charge.limit", {"limit_pct": 20}, issued=fresh), parked_state(now)),
        ("climate.start", payload("climate.start", {"target_c": 21}, issued=fresh - timedelta(hours=1)), parked_state(now)),
    ]
    for name, raw, state in cases:
        harness.runner.handle(topic + name, raw, state, now)
    assert harness.frames() == []
    assert [r[2] for r in harness.results] == ["rejected"] * 5
    reasons = " | ".join(r[3] for r in harness.results)
    for word in ("bad signature", "moving", "stale", "limit_pct", "expired"):
        assert word in reasons


def test_replayed_id_is_rejected_even_after_a_restart(harness: Harness, tmp_path: Path) -> None:
    now = time.time()
    raw = payload("ping", {}, issued=datetime.now(UTC), cid="once-only")
    harness.runner.handle(f"carfriend/v1/{VID}/cmd/ping", raw, parked_state(now), now)
    harness.memory.close()
    again = Harness(tmp_path)  # a new process: same state directory
    again.runner.handle(f"carfriend/v1/{VID}/cmd/ping", raw, parked_state(now), now)
    assert again.results == [("ping", "once-only", "rejected", "replayed command id")]
    again.close()


def test_rate_limit_and_unreadable_payloads(harness: Harness) -> None:
    now = time.time()
    for _ in range(12):
        harness.runner.handle(f"carfriend/v1/{VID}/cmd/ping", payload("ping", {}, issued=datetime.now(UTC)),
                              parked_state(now), now)
    statuses = [r[2] for r in harness.results]
    assert statuses.count("completed") == 10 and statuses.count("rejected") == 2
    assert "rate limit" in harness.results[-1][3]
    harness.runner.handle(f"carfriend/v1/{VID}/cmd/ping", b"\xff\xfe garbage", parked_state(now), now)
    assert harness.runner.dropped == 1 and len(harness.results) == 12


def test_reply_later_schedules_off_peak_and_the_car_confirms_in_words(harness: Harness) -> None:
    now = time.time()
    harness.memory.ask("msg-1", "charge.started", ["ok", "later"], {}, now)
    state = parked_state(now)
    raw = payload("reply", {"message_id": "msg-1", "answer": "later"}, issued=datetime.now(UTC))
    harness.runner.handle(f"carfriend/v1/{VID}/cmd/reply", raw, state, now)
    frames = harness.frames()
    sched = harness.vehicle.find_message("TCU_ChargeScheduleCmd").decode(frames[0].data)
    assert sched["StartMinutesRequest"] == 23 * 60 and str(sched["ScheduleRequest"]) == "ONCE"
    state.set(vss.TIMER_MODE, "ONCE", now + 1)
    state.set(vss.TIMER_TIME, 1380, now + 1)
    harness.runner.poll(state, now + 1)
    assert [r[2] for r in harness.results] == ["accepted", "completed"]
    assert harness.said == [("charge.scheduled", {"start": "23:00", "reason": "off-peak"})]


@pytest.mark.parametrize(("answer", "schedules"), [("yes", True), ("no", False)])
def test_offpeak_question_answered_yes_schedules_and_no_does_nothing(harness: Harness, answer: str,
                                                                     schedules: bool) -> None:
    now = time.time()
    harness.memory.ask("q-1", "charge.offpeak_question", ["yes", "no"], {"start": "23:00"}, now)
    raw = payload("reply", {"message_id": "q-1", "answer": answer}, issued=datetime.now(UTC))
    harness.runner.handle(f"carfriend/v1/{VID}/cmd/reply", raw, parked_state(now), now)
    frames = harness.frames()
    assert [f.arbitration_id for f in frames] == ([0x6A3] if schedules else [])
    assert harness.results[0][2] == ("accepted" if schedules else "completed")
