"""Remote commands: signed, fresh, replay-proof, bounded, parked-only; no frame unless accepted."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
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
    assert interlock(parked_state(100.0), 100.0, max_age_s=3.0) is None
    assert "moving" in interlock(parked_state(100.0, speed=12.0), 100.0, max_age_s=3.0)
    assert "gear is D" in interlock(parked_state(100.0, gear="D"), 100.0, max_age_s=3.0)
    assert "speed unknown or stale" in interlock(parked_state(100.0), 110.0, max_age_s=3.0)
    assert "speed unknown or stale" in interlock(VehicleState(), 0.0, max_age_s=3.0)


class Harness:
    """A CommandRunner on a real python-can virtual bus, with a second bus watching the frames."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None,
                 send: Callable[[can.Message], None] | None = None, config_path: Path = EV_CONFIG) -> None:
        config = load_config(config_path, environ=env or {})
        self.vehicle = load_vehicle(config)
        channel = f"cmd-test-{time.monotonic_ns()}"
        self.bus = can.Bus(interface="virtual", channel=channel)
        self.watch = can.Bus(interface="virtual", channel=channel)
        self.results: list[tuple[str, str, str, str]] = []
        self.said: list[tuple[str, dict]] = []
        self.memory = CommandMemory(tmp / "commands.db")
        self.runner = CommandRunner(config, self.vehicle, self.memory, KEY, send=send or self.bus.send,
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
    state.set(vss.TIMER_MODE, "START_TIME", now + 1)  # VSS's value for the DBC's ONCE
    state.set(vss.TIMER_START_MINUTE, 1380, now + 1)
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


# -- issue 12: the command path is a trust boundary ----------------------------------------
ZEROS = "0" * 64
DEEP = b"[" * 975 + b"]" * 975


def raw_envelope(cid: str = "k1", issued: bytes = b'"2026-11-22T03:00:00Z"', args: bytes = b"{}",
                 sig: str = ZEROS) -> bytes:
    return b'{"id":"%s","issued_at":%s,"args":%s,"sig":"%s"}' % (cid.encode(), issued, args, sig.encode())


def signed_raw(name: str, args_json: bytes, issued: str = "2026-11-22T03:00:00Z", cid: str = "s1") -> bytes:
    """A correctly signed payload whose args are given as JSON text (whatever the agent will parse)."""
    args = json.loads(args_json)
    from agent.commands.protocol import sign
    return raw_envelope(cid, json.dumps(issued).encode(), args_json, sign(KEY, VID, name, cid, issued, args))


POISON = [
    pytest.param(raw_envelope(issued=b'"\\ud800"'), id="lone-surrogate-issued_at"),  # the review's payload
    pytest.param(raw_envelope(args=b'{"x":"\\udfff"}'), id="lone-surrogate-arg"),
    pytest.param(raw_envelope(args=b'{"\\ud800":1}'), id="lone-surrogate-key"),
    pytest.param(raw_envelope(args=DEEP), id="nested-975-as-args"),
    pytest.param(b"[" * 3000, id="nested-3000-unclosed"),
    pytest.param(raw_envelope(args=b'{"x":NaN}'), id="nan"),
    pytest.param(raw_envelope(args=b'{"x":-Infinity}'), id="infinity"),
    pytest.param(raw_envelope(args=b'{"x":1e999}'), id="1e999"),
    pytest.param(raw_envelope(args=b'{"x":' + b"9" * 4000 + b"}"), id="4000-digit-int"),
    pytest.param(raw_envelope(issued=b"12"), id="issued_at-number"),
    pytest.param(raw_envelope(args=b'{"x":"\xed\xa0\x80"}'), id="raw-surrogate-bytes"),
    pytest.param(signed_raw("ping", b"{}", issued="0001-01-01T00:00:00+14:00"), id="signed-year-1"),
    pytest.param(signed_raw("ping", b"{}", issued="9999-12-31T23:59:59.999999-14:00"), id="signed-year-9999"),
    pytest.param(signed_raw("ping", b'{"x":1e308}'), id="signed-huge-float"),
]


@pytest.mark.parametrize("raw", POISON)
def test_poison_envelopes_are_clean_rejections_not_exceptions(raw: bytes) -> None:
    with pytest.raises(CommandError):
        check("ping", raw)


def test_nesting_at_any_depth_is_a_clean_rejection() -> None:
    # Python's json decodes ~950 levels and then fails to re-encode them two frames deeper
    # (RecursionError): which depth hits that window depends on the caller's stack.
    for depth in range(1, 2000, 1):
        nested = b"[" * depth + b"]" * depth
        with pytest.raises(CommandError):
            check("ping", raw_envelope(args=b'{"x":' + nested + b"}"))


@pytest.mark.parametrize("raw", POISON)
def test_the_handler_answers_or_drops_poison_and_never_raises(harness: Harness, raw: bytes) -> None:
    now = time.time()
    harness.runner.handle(f"carfriend/v1/{VID}/cmd/ping", raw, parked_state(now), now)
    answered = [r for r in harness.results if r[2] == "rejected"]
    assert len(answered) + harness.runner.dropped == 1, harness.results
    assert harness.frames() == []


def test_the_reviewers_surrogate_command_is_answered_rejected_with_its_id(harness: Harness) -> None:
    now = time.time()
    harness.runner.handle(f"carfriend/v1/{VID}/cmd/ping", raw_envelope(issued=b'"\\ud800"'), parked_state(now), now)
    assert [(r[1], r[2]) for r in harness.results] == [("k1", "rejected")]
    assert "not JSON" in harness.results[0][3]


def test_an_unexpected_error_while_executing_is_answered_and_the_next_command_runs(tmp_path: Path) -> None:
    def broken_driver(frame: can.Message) -> None:
        raise RuntimeError("adapter firmware bug")

    h = Harness(tmp_path, send=broken_driver)
    try:
        now = time.time()
        raw = payload("climate.start", {"target_c": 21}, issued=datetime.now(UTC), cid="c-1")
        h.runner.handle(f"carfriend/v1/{VID}/cmd/climate.start", raw, parked_state(now), now)
        assert h.results[0][:3] == ("climate.start", "c-1", "rejected")
        assert "internal error" in h.results[0][3] and "RuntimeError" in h.results[0][3]
        h.runner.handle(f"carfriend/v1/{VID}/cmd/ping", payload("ping", {}, issued=datetime.now(UTC), cid="p-1"),
                        parked_state(now), now)
        assert h.results[-1] == ("ping", "p-1", "completed", "pong")
        assert h.runner.counts["internal error"] == 1
    finally:
        h.close()


def test_interlock_has_its_own_short_freshness_limit() -> None:
    state = VehicleState(stale_after={vss.SPEED: 900.0, vss.GEAR: 900.0})  # the signals' own limit
    state.set(vss.SPEED, 0.0, 100.0)
    state.set(vss.GEAR, "P", 100.0)
    assert interlock(state, 102.0, max_age_s=3.0) is None
    assert "speed unknown or stale" in interlock(state, 104.0, max_age_s=3.0)
    state.set(vss.SPEED, 0.0, 104.0)
    assert "gear unknown or stale" in interlock(state, 104.0, max_age_s=3.0)


def test_a_parked_reading_ten_seconds_old_refuses_with_the_shipped_profile(harness: Harness) -> None:
    now = time.time()
    state = harness.vehicle.new_decoder().state  # speed and gear trusted 900 s as signals
    state.set(vss.SPEED, 0.0, now - 10)
    state.set(vss.GEAR, "P", now - 10)
    assert state.fresh(vss.SPEED, now) == 0.0
    raw = payload("climate.start", {"target_c": 21}, issued=datetime.now(UTC))
    harness.runner.handle(f"carfriend/v1/{VID}/cmd/climate.start", raw, state, now)
    assert harness.frames() == []
    assert harness.results[0][2] == "rejected" and "speed unknown or stale" in harness.results[0][3]


@pytest.mark.parametrize(("frame", "counter"), [
    ({"VehicleSpeed": 655.35, "Gear": "P"}, "not_available"),  # raw 0xFFFF
    ({"VehicleSpeed": 400.0, "Gear": "P"}, "out_of_range"),  # beyond the DBC's 0-300 km/h
])
def test_an_unusable_speed_reading_invalidates_the_interlocks_view(frame: dict[str, Any], counter: str) -> None:
    from frames import encode

    vehicle = load_vehicle(load_config(EV_CONFIG, environ={}))
    decoder = vehicle.new_decoder()
    decoder.decode(100.0, *encode("Drive_State", VehicleSpeed=0.0, Gear="P"))
    assert interlock(decoder.state, 100.1, max_age_s=3.0) is None
    decoder.decode(100.2, *encode("Drive_State", **frame))
    assert getattr(decoder.drops, counter) == 1
    assert decoder.state.values[vss.SPEED] == 0.0  # the published state keeps the last value
    assert "speed unknown" in interlock(decoder.state, 100.3, max_age_s=3.0)
    decoder.decode(100.35, *encode("Drive_State", **frame))  # repeated: still not usable
    assert "speed unknown" in interlock(decoder.state, 100.36, max_age_s=3.0)
    decoder.decode(100.4, *encode("Drive_State", VehicleSpeed=0.0, Gear="P"))  # valid again
    assert interlock(decoder.state, 100.5, max_age_s=3.0) is None


def test_reply_later_is_refused_when_charge_schedule_is_not_allowed(tmp_path: Path) -> None:
    h = Harness(tmp_path, env={"CARFRIEND_COMMANDS__ALLOWLIST": '["reply", "ping", "climate.start"]'})
    try:
        now = time.time()
        h.memory.ask("msg-1", "charge.started", ["ok", "later"], {}, now)
        raw = payload("reply", {"message_id": "msg-1", "answer": "later"}, issued=datetime.now(UTC))
        h.runner.handle(f"carfriend/v1/{VID}/cmd/reply", raw, parked_state(now), now)
        assert h.frames() == []
        assert h.results[0][2] == "rejected" and "charge.schedule is not on this vehicle's allowlist" in h.results[0][3]
        assert h.memory.question("msg-1")[3] is None  # still open
    finally:
        h.close()


def test_a_refused_answer_can_be_given_again_once_the_car_is_parked(harness: Harness) -> None:
    now = time.time()
    harness.memory.ask("msg-1", "charge.started", ["ok", "later"], {}, now)
    topic = f"carfriend/v1/{VID}/cmd/reply"
    reply = {"message_id": "msg-1", "answer": "later"}
    harness.runner.handle(topic, payload("reply", reply, issued=datetime.now(UTC)), parked_state(now, speed=20), now)
    assert harness.results[-1][2] == "rejected" and "moving" in harness.results[-1][3]
    assert harness.memory.question("msg-1")[3] is None
    harness.runner.handle(topic, payload("reply", reply, issued=datetime.now(UTC)), parked_state(now), now)
    assert harness.results[-1][2] == "accepted"
    assert [f.arbitration_id for f in harness.frames()] == [0x6A3]
    assert harness.memory.question("msg-1")[3] == "later"
    harness.runner.handle(topic, payload("reply", reply, issued=datetime.now(UTC)), parked_state(now), now)
    assert harness.results[-1][2] == "rejected" and "already answered" in harness.results[-1][3]


def test_an_answer_whose_action_was_never_confirmed_can_be_given_again(tmp_path: Path) -> None:
    h = Harness(tmp_path, env={"CARFRIEND_COMMANDS__CONFIRM_TIMEOUT_S": "0.05"})
    try:
        now = time.time()
        h.memory.ask("msg-1", "charge.started", ["ok", "later"], {}, now)
        topic = f"carfriend/v1/{VID}/cmd/reply"
        reply = {"message_id": "msg-1", "answer": "later"}
        h.runner.handle(topic, payload("reply", reply, issued=datetime.now(UTC)), parked_state(now), now)
        assert h.results[-1][2] == "accepted"
        deadline = time.monotonic() + 5
        while h.runner.pending and time.monotonic() < deadline:
            time.sleep(0.06)
            h.runner.poll(parked_state(now), now)
        assert h.results[-1][2] == "failed"
        assert h.memory.question("msg-1")[3] is None
        h.runner.handle(topic, payload("reply", reply, issued=datetime.now(UTC)), parked_state(now), now)
        assert h.results[-1][2] == "accepted"
    finally:
        h.close()


def test_charge_schedule_off_peak_without_a_window_is_a_clean_rejection(tmp_path: Path) -> None:
    profile = EV_CONFIG.read_text().replace('offpeak_window = "23:00-07:00"', "")
    profile = profile.replace('dbc = ["../../dbc/', f'dbc = ["{EV_CONFIG.parents[2]}/dbc/')
    (tmp_path / "car.toml").write_text(profile)
    h = Harness(tmp_path, config_path=tmp_path / "car.toml")
    try:
        now = time.time()
        raw = payload("charge.schedule", {"at": "off-peak"}, issued=datetime.now(UTC))
        h.runner.handle(f"carfriend/v1/{VID}/cmd/charge.schedule", raw, parked_state(now), now)
        assert h.results == [(h.results[0][0], h.results[0][1], "rejected",
                              "no off-peak window configured ([vehicle] offpeak_window)")]
        assert h.frames() == []
    finally:
        h.close()


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


TRICKY_TEXT = st.text(st.sampled_from('[]{}"\\/nu0a é'), max_size=12)


@settings(max_examples=500, deadline=None)
@given(st.recursive(st.none() | st.integers() | TRICKY_TEXT,
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(TRICKY_TEXT, c, max_size=3), max_leaves=20),
       st.integers(0, 6), st.booleans())
def test_the_depth_scan_agrees_with_the_parse_for_any_json(value: Any, limit: int, ascii_only: bool) -> None:
    from agent.commands.protocol import too_deep

    text = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert too_deep(text, limit) == (_depth(value) > limit)
