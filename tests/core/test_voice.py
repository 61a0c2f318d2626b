"""The right moment and sharing with care: quiet hours, digest, rate limits, schedules, redaction, dealer."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.commands.runner import CommandMemory
from agent.core.model import PersonaMessage
from agent.core.persona import SHARE_ALLOW, Persona
from agent.core.pipeline import Pipeline
from agent.core.rules import Event
from agent.core.settings import AgentConfig
from agent.profile.config import load_config
from agent.profile.vehicle import load_vehicle

sys.path.insert(0, str(Path(__file__).parents[1]))
from frames import EV_CONFIG, car_frames  # noqa: E402

TOKYO_MIDNIGHT = datetime.fromisoformat("2026-11-21T00:00:00+09:00").timestamp()


def at(hhmm: str, day: int = 0) -> float:
    hh, mm = hhmm.split(":")
    return TOKYO_MIDNIGHT + day * 86400 + int(hh) * 3600 + int(mm) * 60


def pipeline(env: dict[str, str], held: Any = None) -> tuple[Pipeline, list[PersonaMessage], list]:
    config = load_config(EV_CONFIG, environ=env)
    out: list[PersonaMessage] = []
    side: list = []
    p = Pipeline(load_vehicle(config), out.append, side_sink=lambda *a: side.append(a), held=held)
    return p, out, side


QUIET = {"CARFRIEND_MESSAGES__QUIET_HOURS": "22:00-07:00", "CARFRIEND_MESSAGES__RATE_LIMIT_S": '{"dtc.new" = 3600}',
         "CARFRIEND_MESSAGES__DAILY_CAP": "4"}


def test_24_hours_with_quiet_hours_digest_and_rate_limits() -> None:
    p, out, _ = pipeline(QUIET)
    day = [  # (local time, kind, severity, data)
        ("09:00", "service.due", "info", {"days": 10, "distance_km": 800}),
        ("12:00", "dtc.new", "warning", {"code": "P0A80"}),
        ("12:30", "dtc.new", "warning", {"code": "U0100"}),  # within the hour: suppressed
        ("21:00", "battery.low", "warning", {"soc": 18.0}),
        ("23:00", "dtc.new", "warning", {"code": "B1234"}),  # quiet: held
        ("23:30", "charge.started", "info", {"soc": 18.0, "limit": 80, "eta": at("05:00", 1)}),  # direct
        ("23:50", "service.due", "info", {"days": 9, "distance_km": 700}),  # the day's 5th: capped
        ("01:00", "aux_battery.low", "warning", {"voltage_v": 11.5}),  # urgent by config
        ("02:00", "charge.completed", "info", {"soc": 80.0, "limit": 80, "added_kwh": 39.7}),  # held
        ("03:00", "battery.critical", "critical", {"soc": 8.0}),  # critical: through
    ]
    for i, (hhmm, kind, sev, data) in enumerate(day):
        ts = at(hhmm, 1 if hhmm < "09:00" else 0)  # 01:00-03:00 are the next local day (cap resets)
        p.say(Event(kind, ts, sev, data, key=str(i)))
    p.tick(at("06:59", 1))
    kinds_before = [m.kind for m in out]
    p.tick(at("07:00", 1))
    assert kinds_before == ["service.due", "dtc.new", "battery.low", "charge.started", "aux_battery.low",
                            "battery.critical"]
    digest = out[-1]
    assert digest.kind == "digest" and len(out) == 7
    assert digest.data["kinds"] == ["dtc.new", "charge.completed"] and digest.data["count"] == 2
    assert digest.data["suppressed"] == 2  # the second DTC within the hour, and the capped one
    assert "B1234" in digest.text and ("Charging is done" in digest.text or "fully charged" in digest.text)
    assert "kept 2 repeat messages to myself" in digest.text
    p.tick(at("08:00", 1))
    assert len(out) == 7  # one digest, not one per tick


def test_held_messages_survive_a_restart_during_quiet_hours(tmp_path: Path) -> None:
    memory = CommandMemory(tmp_path / "commands.db")
    p, out, _ = pipeline(QUIET, held=memory)
    p.say(Event("battery.low", at("23:00"), "warning", {"soc": 18.0}))
    assert out == []
    memory.close()
    memory = CommandMemory(tmp_path / "commands.db")  # a new process
    p2, out2, _ = pipeline(QUIET, held=memory)
    p2.tick(at("07:01", 1))
    assert [m.kind for m in out2] == ["digest"] and "18 %" in out2[0].text
    memory.close()


def day_frames(plugged_from: str = "") -> list[tuple[float, int, bytes]]:
    """24 h from midnight, a frame set per minute: 40 km driven 08:00-09:00, SOC 50 % -> 30 %."""
    rows: list[tuple[float, int, bytes]] = []
    from frames import message

    soc, odo = 50.0, 12000.0
    for minute in range(24 * 60):
        ts = TOKYO_MIDNIGHT + minute * 60
        driving = 8 * 60 <= minute < 9 * 60
        if driving:
            soc -= 20.0 / 60
            odo += 40.0 / 60
        msgs = car_frames(ts, soc=soc, speed=40.0 if driving else 0.0, gear="D" if driving else "P")
        msgs.append(message(ts + 0.005, "Odometer_Service", ODO_Mux=0, Odometer=round(odo, 1)))
        rows += [(m.timestamp, m.arbitration_id, bytes(m.data)) for m in msgs]
    return rows


def test_daily_summary_and_plug_in_reminder_run_on_event_time_and_replay_identically() -> None:
    env = {"CARFRIEND_MESSAGES__DAILY_SUMMARY": "21:00", "CARFRIEND_MESSAGES__PLUG_IN_REMINDER": "20:00",
           "CARFRIEND_VEHICLE__OFFPEAK_WINDOW": "", "CARFRIEND_RULES__BATTERY_LOW__THRESHOLD": "5"}
    runs = []
    for _ in range(2):
        p, out, _ = pipeline(env)
        for ts, fid, data in day_frames():
            p.process(ts, fid, data)
        runs.append([(m.kind, m.ts, m.text) for m in out])
    assert runs[0] == runs[1]
    kinds = {k: (ts, text) for k, ts, text in runs[0]}
    assert set(kinds) == {"reminder.plug_in", "summary.daily"}
    assert kinds["reminder.plug_in"][0].startswith("2026-11-21T11:00")  # 20:00 JST
    assert kinds["summary.daily"][0].startswith("2026-11-21T12:00")  # 21:00 JST
    summary = next(m for m in runs[0] if m[0] == "summary.daily")[2]
    assert "40 km" in summary and "12.8 kWh" in summary  # 20 % of 64 kWh


SENSITIVE = {"odometer_km": 987654.321, "vin": "JT2BF22K1W0123456", "latitude": 35.681236,
             "longitude": 139.767125, "location": "1-9-1 Marunouchi", "address": "Chiyoda-ku"}
DATA_KEYS = st.sampled_from(sorted(SENSITIVE) + ["soc", "limit", "days", "distance_km", "code", "voltage_v",
                                                  "added_kwh", "temperature_c", "eta", "start", "mystery"])
KINDS = st.sampled_from(["battery.low", "charge.started", "charge.completed", "service.due", "dtc.new",
                         "aux_battery.low", "summary.daily", "digest"])


@settings(max_examples=300, deadline=None)
@given(kind=KINDS, level=st.sampled_from(["family", "public"]), locale=st.sampled_from(["en", "ja"]),
       keys=st.lists(DATA_KEYS, unique=True, max_size=10))
def test_shared_messages_never_carry_redacted_fields(kind: str, level: str, locale: str, keys: list[str]) -> None:
    config = AgentConfig.model_validate({"vehicle": {"id": "car", "persona": "Kit", "locale": locale},
                                         "messages": {"visibility": {kind: level}}})
    persona = Persona.from_config(config)
    values = {**SENSITIVE, "soc": 42.0, "limit": 80, "days": 3, "distance_km": 120, "code": "P0A80",
              "voltage_v": 11.6, "added_kwh": 12.5, "temperature_c": 51, "eta": at("23:00"), "start": "23:00",
              "mystery": "secret-xyz"}
    data = {k: values[k] for k in keys}
    if kind == "digest":
        data |= {"count": 1, "items": "x", "visibility": level}
    msg = persona.render(Event(kind, at("12:00"), "info", data))
    assert msg.visibility == level
    assert set(msg.data) <= SHARE_ALLOW[level]
    for secret in ("987", "654", "JT2BF22K1W0123456", "35.68", "139.76", "Marunouchi", "Chiyoda", "secret-xyz"):
        assert secret not in msg.text and secret not in msg.model_dump_json()


def test_service_due_sends_the_dealer_what_it_needs_and_no_more() -> None:
    env = {"CARFRIEND_DEALER__DEALER_ID": "toyota-shibuya", "CARFRIEND_DEALER__PREFERRED_SLOTS": '["Sat 09:00-12:00"]'}
    p, out, side = pipeline(env)
    from frames import message

    t = at("10:00")
    for i in range(5):
        for m in [*car_frames(t + i, soc=60.0), message(t + i, "DTC_Broadcast", DTC_Code=0x0A80, DTC_Status="ACTIVE"),
                  message(t + i + 0.1, "Odometer_Service", ODO_Mux=0, Odometer=23456.7),
                  message(t + i + 0.5, "Odometer_Service", ODO_Mux=1, DaysToService=12, KmToService=900)]:
            p.process(m.timestamp, m.arbitration_id, bytes(m.data))
    assert "service.due" in [m.kind for m in out]
    leaf, doc_id, doc = side[0]
    assert leaf == "dealer/appointment" and doc["id"] == doc_id
    assert doc["odometer_km"] == 23457 and doc["active_dtcs"] == ["P0A80"]
    assert doc["preferred_slots"] == ["Sat 09:00-12:00"] and doc["dealer_id"] == "toyota-shibuya"
    assert doc["days_to_service"] == 12 and doc["distance_to_service_km"] == 900
    assert set(doc) == {"id", "vehicle_id", "ts", "message_id", "dealer_id", "service_type", "odometer_km",
                        "days_to_service", "distance_to_service_km", "active_dtcs", "preferred_slots"}


def test_a_critical_dtc_goes_through_quiet_hours() -> None:
    p, out, _ = pipeline(QUIET | {"CARFRIEND_RULES__DTC_NEW__CRITICAL_CODES": '["P0AA6"]'})
    from frames import message

    for i, code in enumerate((0x0A80, 0x0AA6)):  # P0A80 (warning) and P0AA6 (critical) at 23:00
        m = message(at("23:00") + i, "DTC_Broadcast", DTC_Code=code, DTC_Status="ACTIVE")
        p.process(m.timestamp, m.arbitration_id, bytes(m.data))
    assert [(m.kind, m.data["code"], m.severity) for m in out] == [("dtc.new", "P0AA6", "critical")]
    p.tick(at("07:00", 1))
    assert out[-1].kind == "digest" and "P0A80" in out[-1].text
