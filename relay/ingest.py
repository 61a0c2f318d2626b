"""Parse and check what cars publish: topic + payload -> a record to store, or a drop reason (no IO).

One strict pydantic model per topic checks a payload before anything touches the database:
its size first; then pydantic's JSON parser (Rust: nesting stops at 200 levels, invalid UTF-8
and lone surrogates are refused, so Python's recursion is never reached); then types, ranges,
finite numbers, text without NUL or control characters, timestamps between 2000 and a few
minutes ahead of the relay's clock, and free-form fields (a message's ``data``, appointments,
fleet reports) nested at most ``MAX_DEPTH`` deep with at most ``MAX_NODES`` values.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from relay.config import TOPIC_ROOT

VEHICLE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
KIND = r"^[a-z0-9_]+(\.[a-z0-9_]+)*$"
# A COVESA VSS path as the agent publishes them: Vehicle.Powertrain.TractionBattery.StateOfCharge...
SIGNAL_PATH = r"^Vehicle(\.[A-Za-z0-9_]{1,48}){1,12}$"
LEAVES = ("messages", "state", "status", "dealer/appointment", "fleet", "health")
# Subscriptions below carfriend/v1/+/ (results come from cmd/+/result).
SUBSCRIBED = (*LEAVES, "cmd/+/result")

EARLIEST = datetime(2000, 1, 1)
MAX_DEPTH = 8  # containers inside a free-form field
MAX_NODES = 2000  # values inside a free-form field
MAX_INT = 2**53  # what every JSON reader (JavaScript too) reads exactly
MAX_TEXT = 4000
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


class Dropped(Exception):
    """A payload that is not stored; ``reason`` is a short counter key like 'malformed-json'."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True, slots=True)
class Limits:
    """What a payload may be: bytes, how far its timestamps may run ahead, signals per vehicle."""

    max_bytes: int = 65536
    max_future_s: float = 300.0
    max_signals: int = 64


# -- checks shared by the models ----------------------------------------------------------

def clean_text(value: str) -> str:
    """Text a page, a JSON column and PostgreSQL can all hold: no NUL, control characters
    (other than tab and newlines) or lone surrogates."""
    bad = _BAD_CHARS.search(value)
    if bad:
        raise ValueError(f"character U+{ord(bad.group()):04X} is not allowed")
    return value


def bounded_json(value: Any, max_depth: int = MAX_DEPTH) -> Any:
    """A free-form JSON value the database and the pages can take: nesting, size, numbers and
    text bounded. Iterative, so a deep value never reaches Python's recursion limit."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise ValueError(f"more than {MAX_NODES} values")
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, int):
            if abs(item) > MAX_INT:
                raise ValueError(f"integer beyond ±2^53 ({len(str(abs(item)))} digits)")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(f"{item} is not a finite number")
        elif isinstance(item, str):
            _bounded_text(item, MAX_TEXT)
        elif isinstance(item, list | dict):
            if depth >= max_depth:
                raise ValueError(f"nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key in item:
                    _bounded_text(key, 200)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
        else:
            raise ValueError(f"unexpected {type(item).__name__}")
    return value


def _bounded_text(value: str, max_len: int) -> None:
    if len(value) > max_len:
        raise ValueError(f"text longer than {max_len} characters")
    clean_text(value)


def _sane_time(value: datetime, info: ValidationInfo) -> datetime:
    """UTC without a zone (the database's form), between 2000 and now + max_future_s."""
    try:
        utc = value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
    except (OverflowError, ValueError):
        raise ValueError(f"{value.isoformat()} cannot be converted to UTC") from None
    context = info.context or {}
    now: datetime = context["now"]
    limits: Limits = context["limits"]
    if utc < EARLIEST:
        raise ValueError(f"{value.isoformat()} is before 2000")
    if utc > now + timedelta(seconds=limits.max_future_s):
        raise ValueError(f"{value.isoformat()} is more than {limits.max_future_s:.0f} s "
                         "ahead of the relay's clock")
    return utc


def iso_z(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds") + "Z"


_Clean = AfterValidator(clean_text)
Text16 = Annotated[str, Field(max_length=16), _Clean]
Text32 = Annotated[str, Field(max_length=32), _Clean]
Answer = Annotated[str, Field(min_length=1, max_length=32), _Clean]
Text64 = Annotated[str, Field(max_length=64), _Clean]
Text100 = Annotated[str, Field(max_length=100), _Clean]
Text1000 = Annotated[str, Field(max_length=1000), _Clean]
MessageText = Annotated[str, Field(max_length=MAX_TEXT), _Clean]
Id = Annotated[str, Field(min_length=1, max_length=64), _Clean]
Timestamp = Annotated[datetime, AfterValidator(_sane_time),
                      PlainSerializer(iso_z, when_used="json")]
VehicleId = Annotated[str, Field(pattern=VEHICLE_ID)]
Count = Annotated[int, Field(ge=0, le=10**12)]
Number = Annotated[float, Field(ge=-1e12, le=1e12, allow_inf_nan=False)]
BoundedInt = Annotated[int, Field(ge=-MAX_INT, le=MAX_INT)]


class _Doc(BaseModel):
    # strict: no coercion ("5" is not 5). Unknown fields are ignored: docs/topics.md lets newer
    # agents add fields within v1.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class _OpenDoc(_Doc):
    """A document whose unknown fields are kept (shown to dealers, operators), bounded."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    @model_validator(mode="after")
    def _bounded_extras(self) -> _OpenDoc:
        extras = self.__pydantic_extra__ or {}
        if len(extras) > 24:
            raise ValueError(f"{len(extras)} unknown fields (at most 24)")
        for key, value in extras.items():
            _bounded_text(key, 64)
            bounded_json(value, max_depth=4)
        return self


# -- one model per topic ------------------------------------------------------------------

class InboundMessage(_Doc):
    id: Id
    vehicle_id: VehicleId
    ts: Timestamp
    kind: Annotated[str, Field(pattern=KIND, max_length=64)]
    severity: Literal["info", "warning", "critical"]
    visibility: Literal["private", "family", "public"] = "private"
    text: MessageText
    locale: Text16 = "en"
    persona: Text64 = ""
    question: Annotated[list[Answer], Field(max_length=8)] | None = None
    # Checked as a whole: nesting counts from the message, keys and values alike.
    data: Annotated[dict[str, Any], AfterValidator(bounded_json)] = Field(default_factory=dict)


SignalValue = (None | bool | BoundedInt | Number | Text64
               | Annotated[list[Text32], Field(max_length=64)])


class SignalEntry(_Doc):
    value: SignalValue = None
    ts: Timestamp | None = None
    stale: bool = False


class InboundState(_Doc):
    vehicle_id: VehicleId | None = None
    ts: Timestamp
    # false: only the signals that changed, to apply on top of the last full snapshot.
    full: bool = True
    signals: dict[Annotated[str, Field(pattern=SIGNAL_PATH, max_length=200)], SignalEntry]

    @field_validator("signals")
    @classmethod
    def _not_too_many(cls, signals: dict[str, SignalEntry],
                      info: ValidationInfo) -> dict[str, SignalEntry]:
        cap = (info.context or {})["limits"].max_signals
        if len(signals) > cap:
            raise ValueError(f"{len(signals)} signals (at most {cap})")
        return signals

    def entries(self) -> dict[str, dict[str, Any]]:
        """The signals as the database keeps them (only the fields the car sent)."""
        return {path: e.model_dump(mode="json", exclude_unset=True)
                for path, e in self.signals.items()}


class InboundResult(_Doc):
    id: Id
    status: Literal["accepted", "rejected", "completed", "failed"]
    reason: Text1000 | None = None
    ts: Timestamp | None = None


class InboundAppointment(_OpenDoc):
    id: Id | None = None
    vehicle_id: VehicleId | None = None
    ts: Timestamp | None = None
    message_id: Text64 | None = None
    dealer_id: Text64 | None = None
    service_type: Text100 | None = None
    service: Text100 | None = None
    odometer_km: BoundedInt | Number | None = None
    days_to_service: BoundedInt | Number | None = None
    distance_to_service_km: BoundedInt | Number | None = None
    active_dtcs: Annotated[list[Text16], Field(max_length=64)] | None = None
    preferred_slots: Annotated[list[Text64], Field(max_length=16)] | None = None


class OutboxHealth(_Doc):
    queued: Annotated[dict[Text16, Count], Field(max_length=8)] | None = None
    queued_total: Count | None = None
    oldest_age_s: Annotated[float, Field(ge=0, le=1e10, allow_inf_nan=False)] | None = None
    dropped: Annotated[dict[Text16, Count], Field(max_length=8)] | None = None


class InboundFleet(_OpenDoc):
    kind: Annotated[str, Field(pattern=KIND, max_length=64)] = "report"
    vehicle_id: VehicleId | None = None
    id: Id | None = None
    ts: Timestamp | None = None
    outbox: OutboxHealth | None = None
    dropped: Annotated[dict[Text16, Count], Field(max_length=8)] | None = None
    reason: Text1000 | None = None


Seconds = Annotated[float, Field(ge=0, le=1e10, allow_inf_nan=False)]
Reasons = Annotated[dict[Annotated[str, Field(max_length=32), _Clean], Count], Field(max_length=16)]


class HealthFrames(_Doc):
    total: Count
    per_s: Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)]
    decoded: Count
    dropped: Reasons


class HealthBus(_Doc):
    interface: Text32
    channel: Text64 | None
    state: Literal["active", "error_warning", "error_passive", "bus_off", "closed"]
    error_frames: Count
    bus_off_count: Count


class HealthOutbox(_Doc):
    depth: Count
    oldest_age_s: Seconds | None
    dropped: Reasons


class HealthPolls(_Doc):
    answered: Count | None = None
    timed_out: Count | None = None


class HealthProcess(_Doc):
    cpu_pct: Annotated[float, Field(ge=0, le=1e4, allow_inf_nan=False)]
    rss_bytes: Count | None


class InboundHealth(_Doc):
    """The agent's `health` document (agent.core.health.HealthReport, docs/topics.md), bounded."""

    vehicle_id: VehicleId
    ts: Timestamp
    version: Text32
    uptime_s: Seconds
    interval_s: Seconds
    frames: HealthFrames
    bus: HealthBus
    outbox: HealthOutbox
    polls: HealthPolls = HealthPolls()
    process: HealthProcess
    mqtt_sent: Count


MODELS: dict[str, type[_Doc]] = {"messages": InboundMessage, "state": InboundState,
                                 "result": InboundResult, "appointment": InboundAppointment,
                                 "fleet": InboundFleet, "health": InboundHealth}


@dataclass(frozen=True, slots=True)
class Inbound:
    """One checked record: ``leaf`` says which table it goes to."""

    vehicle_id: str
    leaf: str  # messages | state | status | result | appointment | fleet | health
    body: Any
    command: str = ""  # for results: the command name from the topic


def parse_topic(topic: str) -> tuple[str, str, str]:
    """carfriend/v1/<vehicle>/<leaf...> -> (vehicle_id, leaf, command name for results)."""
    parts = topic.split("/")
    if len(parts) < 4 or "/".join(parts[:2]) != TOPIC_ROOT or not re.match(VEHICLE_ID, parts[2]):
        raise Dropped("unknown-topic", topic[:200])
    vehicle_id, rest = parts[2], parts[3:]
    leaf = "/".join(rest)
    if len(rest) == 3 and rest[0] == "cmd" and rest[2] == "result" and re.match(KIND, rest[1]) \
            and len(rest[1]) <= 64:
        return vehicle_id, "result", rest[1]
    if leaf not in LEAVES:
        raise Dropped("unknown-topic", topic[:200])
    return vehicle_id, {"dealer/appointment": "appointment"}.get(leaf, leaf), ""


def parse(topic: str, payload: bytes, limits: Limits, now: datetime) -> Inbound:
    """Check one MQTT message against its topic's model; ``now`` (naive UTC) bounds its
    timestamps. Raises Dropped with the reason when it must not be stored."""
    vehicle_id, leaf, command = parse_topic(topic)
    if len(payload) > limits.max_bytes:
        raise Dropped("oversized", f"{len(payload)} bytes on {topic[:200]}")
    if leaf == "status":
        return Inbound(vehicle_id, leaf, _parse_status(payload))
    doc = _validate(MODELS[leaf], payload, {"now": now, "limits": limits})
    _same_vehicle(vehicle_id, getattr(doc, "vehicle_id", None))
    if isinstance(doc, _OpenDoc):  # kept as the JSON object it is
        return Inbound(vehicle_id, leaf, doc.model_dump(mode="json", exclude_unset=True))
    return Inbound(vehicle_id, leaf, doc, command=command)


def _parse_status(payload: bytes) -> str:
    text = payload.decode("utf-8", "replace").strip().lower()
    if text not in ("online", "offline"):
        raise Dropped("invalid", f"status {text[:40]!r}")
    return text


def _validate(model: type[_Doc], payload: bytes, context: dict[str, Any]) -> Any:
    try:
        return model.model_validate_json(payload, context=context)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        if first["type"] == "json_invalid":
            deep = "recursion limit" in first["msg"]
            raise Dropped("too-deep" if deep else "malformed-json", first["msg"][:200]) from None
        where = ".".join(str(p) for p in first["loc"])
        raise Dropped("invalid", f"{model.__name__}: {where[:120]}: {first['msg'][:200]}") from None


def _same_vehicle(topic_vehicle: str, body_vehicle: object) -> None:
    if body_vehicle is not None and body_vehicle != topic_vehicle:
        raise Dropped("vehicle-mismatch", f"topic {topic_vehicle!r}, payload {str(body_vehicle)[:64]!r}")


def appointment_key(doc: dict[str, Any]) -> str:
    """The document's own id when it has one, else a digest of its content (duplicates
    collapse): appointments and fleet reports."""
    own = doc.get("id")
    if isinstance(own, str) and 0 < len(own) <= 64:
        return own
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:64]


def naive_utc(ts: datetime) -> datetime:
    """The database's form of a timestamp: UTC, no zone (a naive input is taken as UTC)."""
    if ts.tzinfo is None:
        return ts
    return ts.astimezone(UTC).replace(tzinfo=None)


def ingest_problem(worker_alive: bool, connected: bool, idle_s: float, lag_s: float,
                   max_lag_s: float) -> str | None:
    """Why the ingest is unhealthy, or None. idle_s: since the worker loop last came round;
    lag_s: how long the oldest message not yet stored has waited."""
    if not worker_alive:
        return "ingest worker stopped"
    if not connected:
        return "broker disconnected"
    if lag_s > max_lag_s:
        return f"ingest lags {lag_s:.0f} s behind (limit {max_lag_s:.0f} s)"
    if idle_s > max_lag_s:
        return f"ingest worker stuck for {idle_s:.0f} s"
    return None
