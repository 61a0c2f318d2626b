"""Downlink commands: parsing, signature, freshness, arguments and the safety interlock (no IO).

A command on ``carfriend/v1/<vehicle_id>/cmd/<name>`` is ``{"id", "issued_at", "args", "sig"}``;
``sig`` is hex HMAC-SHA256 with the vehicle's key over the canonical JSON (sorted keys,
compact separators, UTF-8) of ``{"vehicle_id", "command", "id", "issued_at", "args"}``.
See docs/commands.md. Every check here takes its time as an argument.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.core import vss
from agent.core.errors import CommandError
from agent.core.state import VehicleState

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
SIG_RE = re.compile(r"^[0-9a-f]{64}$")
HHMM_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(key: bytes, vehicle_id: str, command: str, command_id: str, issued_at: str, args: dict[str, Any]) -> str:
    body = {"vehicle_id": vehicle_id, "command": command, "id": command_id, "issued_at": issued_at, "args": args}
    return hmac.new(key, canonical_json(body), hashlib.sha256).hexdigest()


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class NoArgs(_Args):
    pass


class ClimateStartArgs(_Args):
    target_c: float = Field(ge=16.0, le=30.0)

    @field_validator("target_c", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


class ChargeLimitArgs(_Args):
    limit_pct: int = Field(ge=50, le=100)


class ChargeScheduleArgs(_Args):
    at: str = Field(description='"HH:MM" local time, or "off-peak"')

    @field_validator("at")
    @classmethod
    def _when(cls, v: str) -> str:
        if v != "off-peak" and not HHMM_RE.match(v):
            raise ValueError('must be "HH:MM" (24 h, local) or "off-peak"')
        return v


class ReplyArgs(_Args):
    message_id: str = Field(min_length=1, max_length=64)
    answer: str = Field(min_length=1, max_length=32)


# name -> (argument model, actuates the car)
COMMANDS: dict[str, tuple[type[_Args], bool]] = {
    "climate.start": (ClimateStartArgs, True),
    "climate.stop": (NoArgs, True),
    "charge.start": (NoArgs, True),
    "charge.stop": (NoArgs, True),
    "charge.schedule": (ChargeScheduleArgs, True),
    "charge.limit": (ChargeLimitArgs, True),
    "reply": (ReplyArgs, False),  # may lead to an actuation, which is then checked itself
    "status.request": (NoArgs, False),
    "ping": (NoArgs, False),
}


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    id: str
    issued_at: float
    args: dict[str, Any]
    actuating: bool


def read_id(payload: bytes) -> str | None:
    """The command id, if one can be read at all (for a rejection result)."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    cid = doc.get("id") if isinstance(doc, dict) else None
    return cid if isinstance(cid, str) and ID_RE.match(cid) else None


def parse(name: str, payload: bytes, *, vehicle_id: str, key: bytes | None, now: float,
          window_s: float, skew_s: float, max_bytes: int) -> Command:
    """Check one command: structure, known name, signature, freshness, arguments.

    Raises CommandError(reason). Replay, rate, allowlist and interlock checks are the caller's,
    since they need memory or the vehicle state.
    """
    if len(payload) > max_bytes:
        raise CommandError(f"payload too large ({len(payload)} bytes, max {max_bytes})")
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise CommandError("payload is not JSON") from None
    if not isinstance(doc, dict):
        raise CommandError("payload is not a JSON object")
    extra = set(doc) - {"id", "issued_at", "args", "sig"}
    if extra:
        raise CommandError(f"unexpected field(s): {', '.join(sorted(map(str, extra)))[:100]}")
    cid, issued, args, sig = doc.get("id"), doc.get("issued_at"), doc.get("args", {}), doc.get("sig")
    if not isinstance(cid, str) or not ID_RE.match(cid):
        raise CommandError("id: missing or not 1-64 characters of [A-Za-z0-9_.:-]")
    if not isinstance(issued, str) or not isinstance(args, dict):
        raise CommandError("issued_at must be an ISO 8601 string and args an object")
    if name not in COMMANDS:
        raise CommandError(f"unknown command {name[:64]!r}")
    if not isinstance(sig, str) or not SIG_RE.match(sig):
        raise CommandError("missing or malformed signature")
    if key is None:
        raise CommandError("commands are disabled: no command key configured")
    if not hmac.compare_digest(sig, sign(key, vehicle_id, name, cid, issued, args)):
        raise CommandError("bad signature")
    issued_ts = _parse_time(issued)
    age = now - issued_ts
    if age > window_s + skew_s or age < -skew_s:
        raise CommandError(f"expired or not yet valid: issued_at is {age:+.0f} s from now "
                           f"(window {window_s:g} s, skew {skew_s:g} s)")
    model, actuating = COMMANDS[name]
    try:
        checked = model.model_validate(args).model_dump()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "args"
        raise CommandError(f"args.{where}: {first['msg']}") from None
    return Command(name, cid, issued_ts, checked, actuating)


def _parse_time(text: str) -> float:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError("issued_at is not ISO 8601") from None
    if when.tzinfo is None:
        raise CommandError("issued_at has no time zone (use UTC, ending in Z)")
    return when.timestamp()


def interlock(state: VehicleState, now: float) -> str | None:
    """Why an actuating command must not run now, or None when the car is parked.

    Parked = speed 0 and gear P, both fresh. Anything unknown or stale refuses.
    """
    speed, gear = state.fresh(vss.SPEED, now), state.fresh(vss.GEAR, now)
    if speed is None:
        return "refused: vehicle speed unknown or stale"
    if abs(speed) > 0.5:
        return f"refused: vehicle is moving ({speed:g} km/h)"
    if gear is None:
        return "refused: gear unknown or stale"
    if str(gear).upper() not in ("P", "PARK", "DI_GEAR_P"):
        return f"refused: gear is {gear}, not P"
    return None
