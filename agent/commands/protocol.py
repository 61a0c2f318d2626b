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
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    ValidationError,
    field_validator,
)

from agent.core import vss
from agent.core.errors import CommandError
from agent.core.state import VehicleState

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
SIG_RE = re.compile(r"^[0-9a-f]{64}$")
ISSUED_RE = re.compile(r"^[0-9][0-9T:.,+Z -]{9,39}$")  # ASCII, bounded; fromisoformat decides the rest
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


# -- the envelope: checked before anything else looks at the payload -----------------------
MAX_DEPTH = 4  # a command is an object holding the args object: two levels
MAX_ARGS = 8
ArgName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
# Scalars only, each re-encodable exactly as signed: finite floats, ints JSON numbers carry
# exactly, strings of valid Unicode (the JSON parser refuses lone surrogates).
ArgValue = (StrictBool | Annotated[int, Field(strict=True, ge=-(2**53), le=2**53)]
            | Annotated[float, Field(strict=True, allow_inf_nan=False)]
            | Annotated[str, StringConstraints(max_length=64)] | None)


class Envelope(BaseModel):
    """The outer command document, as parsed from untrusted bytes (one strict model, no json.loads)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    id: Annotated[str, StringConstraints(pattern=ID_RE.pattern)]
    issued_at: Annotated[str, StringConstraints(pattern=ISSUED_RE.pattern)]
    args: Annotated[dict[ArgName, ArgValue], Field(max_length=MAX_ARGS)] = Field(default_factory=dict)
    sig: Annotated[str, StringConstraints(pattern=SIG_RE.pattern)]


_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')


def too_deep(payload: bytes, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON text nests arrays/objects deeper than ``limit`` (scanned, not parsed).

    Exact for valid JSON (escaped backslashes and quotes go first, then all but quotes and
    brackets); invalid JSON the strict parser refuses anyway. Linear: ~2 ms for 64 KiB of brackets.
    """
    depth, in_string = 0, False
    structure = payload.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    for byte in structure:
        if byte == 0x22:
            in_string = not in_string
        elif in_string:
            continue
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def read_id(payload: bytes, max_bytes: int) -> str | None:
    """The command id, if one can be read at all, to address a rejection. Never raises.

    Lenient on purpose (a payload the strict model refuses still gets its answer), but only
    within the size and depth limits, and the id itself must be a valid id.
    """
    if len(payload) > max_bytes or too_deep(payload):
        return None
    try:
        doc = json.loads(payload)
        cid = doc.get("id") if isinstance(doc, dict) else None
    except Exception:  # noqa: BLE001 - anything unreadable just has no id
        return None
    return cid if isinstance(cid, str) and ID_RE.match(cid) else None


def parse(name: str, payload: bytes, *, vehicle_id: str, key: bytes | None, now: float,
          window_s: float, skew_s: float, max_bytes: int) -> Command:
    """Check one command: size, depth, structure, known name, signature, freshness, arguments.

    Raises CommandError(reason), and nothing else. Replay, rate, allowlist and interlock checks
    are the caller's, since they need memory or the vehicle state.
    """
    if len(payload) > max_bytes:
        raise CommandError(f"payload too large ({len(payload)} bytes, max {max_bytes})")
    if too_deep(payload):
        raise CommandError(f"payload nested more than {MAX_DEPTH} levels deep")
    try:
        env = Envelope.model_validate_json(payload)
    except ValidationError as exc:
        reason, before_name = _envelope_problem(exc)
        if not before_name and name not in COMMANDS:
            raise CommandError(f"unknown command {name[:64]!r}") from None
        raise CommandError(reason) from None
    if name not in COMMANDS:
        raise CommandError(f"unknown command {name[:64]!r}")
    if key is None:
        raise CommandError("commands are disabled: no command key configured")
    if not hmac.compare_digest(env.sig, _signature(key, vehicle_id, name, env)):
        raise CommandError("bad signature")
    issued_ts = _parse_time(env.issued_at)
    age = now - issued_ts
    if age > window_s + skew_s or age < -skew_s:
        raise CommandError(f"expired or not yet valid: issued_at is {age:+.0f} s from now "
                           f"(window {window_s:g} s, skew {skew_s:g} s)")
    model, actuating = COMMANDS[name]
    try:
        checked = model.model_validate(env.args).model_dump()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "args"
        raise CommandError(f"args.{where}: {first['msg']}") from None
    return Command(name, env.id, issued_ts, checked, actuating)


def _signature(key: bytes, vehicle_id: str, name: str, env: Envelope) -> str:
    try:  # the envelope's types always encode; a failure here is still only a refusal
        return sign(key, vehicle_id, name, env.id, env.issued_at, env.args)
    except (ValueError, TypeError, RecursionError):
        raise CommandError("args cannot be encoded canonically") from None


# Which envelope problem is reported when there are several: the order of docs/commands.md.
_FIELD_ORDER = {"": 0, "extra": 1, "id": 2, "sig": 3, "issued_at": 4, "args": 5}
_FIELD_REASON = {
    "id": "id: missing or not 1-64 characters of [A-Za-z0-9_.:-]",
    "sig": "missing or malformed signature",
    "issued_at": "issued_at: missing or not an ISO 8601 string with a time zone (at most 40 characters)",
}


def _envelope_problem(exc: ValidationError) -> tuple[str, bool]:
    """The reason for the first envelope problem; True when it comes before the name check."""
    errors = exc.errors(include_url=False, include_input=False)

    def field(e: Any) -> str:
        return "extra" if e["type"] == "extra_forbidden" else str(e["loc"][0]) if e["loc"] else ""

    first = min(errors, key=lambda e: _FIELD_ORDER.get(field(e), 9))
    where = field(first)
    if where == "":
        if first["type"] == "json_invalid":
            return f"payload is not JSON: {first['msg'].removeprefix('Invalid JSON: ')}", True
        return "payload is not a JSON object", True
    if where == "extra":
        names = sorted(str(e["loc"][0])[:32] for e in errors if e["type"] == "extra_forbidden")
        return f"unexpected field(s): {', '.join(names)[:100]}", True
    if where in _FIELD_REASON:
        return _FIELD_REASON[where], where == "id"
    return _args_problem(first), False


def _args_problem(error: Any) -> str:
    loc = error["loc"]
    if len(loc) < 2:
        return f"args: must be an object of at most {MAX_ARGS} arguments"
    name = str(loc[1])[:32]
    if loc[-1] == "[key]":
        return f"args: argument name {name!r} is not 1-32 characters of a-z 0-9 _"
    return (f"args.{name}: must be a finite number, true, false, null or a string of at most "
            "64 characters")


def _parse_time(text: str) -> float:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if when.tzinfo is None:
            raise CommandError("issued_at has no time zone (use UTC, ending in Z)")
        return when.timestamp()
    except (ValueError, OverflowError):
        raise CommandError("issued_at is not ISO 8601") from None


def interlock(state: VehicleState, now: float, *, max_age_s: float) -> str | None:
    """Why an actuating command must not run now, or None when the car is parked.

    Parked = speed 0 and gear P, both read within max_age_s (the interlock's own limit, much
    shorter than the signals' staleness) with no "not available" reading since. Anything else
    refuses.
    """
    speed, gear = state.current(vss.SPEED, now, max_age_s), state.current(vss.GEAR, now, max_age_s)
    if speed is None:
        return f"refused: vehicle speed unknown or stale (no valid reading in the last {max_age_s:g} s)"
    if abs(speed) > 0.5:
        return f"refused: vehicle is moving ({speed:g} km/h)"
    if gear is None:
        return f"refused: gear unknown or stale (no valid reading in the last {max_age_s:g} s)"
    if gear != vss.GEAR_PARK and str(gear).upper() not in ("P", "PARK", "DI_GEAR_P"):
        return f"refused: gear is {gear}, not P ({vss.GEAR_PARK})"
    return None
