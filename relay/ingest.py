"""Parse and check what cars publish: topic + payload -> a record to store, or a drop reason (no IO)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from relay.config import TOPIC_ROOT

VEHICLE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
LEAVES = ("messages", "state", "status", "dealer/appointment", "fleet")
# Subscriptions below carfriend/v1/+/ (results come from cmd/+/result).
SUBSCRIBED = (*LEAVES, "cmd/+/result")


class Dropped(Exception):
    """A payload that is not stored; ``reason`` is a short counter key like 'malformed-json'."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class _Lenient(BaseModel):
    # Newer agents may add fields: ignore them rather than drop the message.
    model_config = ConfigDict(extra="ignore", frozen=True)


class InboundMessage(_Lenient):
    id: Annotated[str, Field(min_length=1, max_length=64)]
    vehicle_id: Annotated[str, Field(pattern=VEHICLE_ID)]
    ts: datetime
    kind: Annotated[str, Field(pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)*$", max_length=64)]
    severity: Literal["info", "warning", "critical"]
    visibility: Literal["private", "family", "public"] = "private"
    text: Annotated[str, Field(max_length=4000)]
    locale: Annotated[str, Field(max_length=16)] = "en"
    persona: Annotated[str, Field(max_length=64)] = ""
    question: Annotated[list[Annotated[str, Field(min_length=1, max_length=32)]],
                        Field(max_length=8)] | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class InboundState(_Lenient):
    vehicle_id: Annotated[str, Field(pattern=VEHICLE_ID)] | None = None
    ts: datetime
    # false: only the signals that changed, to apply on top of the last full snapshot.
    full: bool = True
    signals: dict[Annotated[str, Field(max_length=200)], dict[str, Any]]


class InboundResult(_Lenient):
    id: Annotated[str, Field(min_length=1, max_length=64)]
    status: Literal["accepted", "rejected", "completed", "failed"]
    reason: Annotated[str, Field(max_length=1000)] | None = None
    ts: datetime | None = None


@dataclass(frozen=True, slots=True)
class Inbound:
    """One checked record: ``leaf`` says which table it goes to."""

    vehicle_id: str
    leaf: str  # messages | state | status | result | appointment | fleet
    body: Any
    command: str = ""  # for results: the command name from the topic


def parse_topic(topic: str) -> tuple[str, str, str]:
    """carfriend/v1/<vehicle>/<leaf...> -> (vehicle_id, leaf, command name for results)."""
    parts = topic.split("/")
    if len(parts) < 4 or "/".join(parts[:2]) != TOPIC_ROOT:
        raise Dropped("unknown-topic", topic[:200])
    vehicle_id, rest = parts[2], parts[3:]
    leaf = "/".join(rest)
    if len(rest) == 3 and rest[0] == "cmd" and rest[2] == "result":
        return vehicle_id, "result", rest[1]
    if leaf not in LEAVES:
        raise Dropped("unknown-topic", topic[:200])
    return vehicle_id, {"dealer/appointment": "appointment"}.get(leaf, leaf), ""


def parse(topic: str, payload: bytes, max_bytes: int) -> Inbound:
    """Check one MQTT message; raises Dropped with the reason when it must not be stored."""
    vehicle_id, leaf, command = parse_topic(topic)
    if len(payload) > max_bytes:
        raise Dropped("oversized", f"{len(payload)} bytes on {topic[:200]}")
    if leaf == "status":
        return Inbound(vehicle_id, leaf, _parse_status(payload))
    doc = _json(payload)
    if leaf == "messages":
        msg = _validate(InboundMessage, doc)
        _same_vehicle(vehicle_id, msg.vehicle_id)
        return Inbound(vehicle_id, leaf, msg)
    if leaf == "state":
        state = _validate(InboundState, doc)
        _same_vehicle(vehicle_id, state.vehicle_id)
        return Inbound(vehicle_id, leaf, state)
    if leaf == "result":
        return Inbound(vehicle_id, leaf, _validate(InboundResult, doc), command=command[:64])
    if not isinstance(doc, dict):
        raise Dropped("invalid", f"{leaf} is not a JSON object")
    _same_vehicle(vehicle_id, doc.get("vehicle_id"))
    return Inbound(vehicle_id, leaf, doc)


def _parse_status(payload: bytes) -> str:
    text = payload.decode("utf-8", "replace").strip().lower()
    if text not in ("online", "offline"):
        raise Dropped("invalid", f"status {text[:40]!r}")
    return text


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Dropped("malformed-json", str(exc)[:200]) from None


def _validate(model: type[_Lenient], doc: Any) -> Any:
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise Dropped("invalid", f"{model.__name__}: {where}: {first['msg']}") from None


def _same_vehicle(topic_vehicle: str, body_vehicle: object) -> None:
    if body_vehicle is not None and body_vehicle != topic_vehicle:
        raise Dropped("vehicle-mismatch", f"topic {topic_vehicle!r}, payload {str(body_vehicle)[:64]!r}")


def appointment_key(doc: dict[str, Any]) -> str:
    """The appointment's own id when it has one, else a digest of its content (duplicates collapse)."""
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
