"""Wire models: the persona message every consumer reads, and its deterministic id (no IO)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent.core.settings import Severity, Visibility

# Namespace of carfriend message ids (uuid5): the same vehicle, kind and event time give the
# same id on every replay and every retry, so receivers can drop duplicates.
MESSAGE_ID_NAMESPACE = uuid.UUID("6f1d1c2e-6a53-5c3e-9f0a-2b8c7d0e4a11")


def message_id(vehicle_id: str, kind: str, ts: float) -> str:
    """Deterministic id of the message about one event (microsecond resolution)."""
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, f"{vehicle_id}/{kind}/{round(ts * 1e6)}"))


def iso_utc(ts: float) -> str:
    """ISO 8601 UTC with milliseconds and a Z, e.g. 2026-11-22T02:15:00.000Z."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PersonaMessage(BaseModel):
    """One message from the car, as published on ``carfriend/v1/<vehicle_id>/messages``."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"title": "carfriend persona message", "$id": "carfriend/v1/message"},
    )

    id: str = Field(description="Deterministic (uuid5 of vehicle, kind, event time): equal ids are the same message.")
    vehicle_id: str
    ts: str = Field(description="Event time, ISO 8601 UTC.")
    kind: str = Field(description="What happened, e.g. battery.low, charge.started.")
    severity: Severity
    visibility: Visibility = Field(description="Who may read it: private (owner), family, public.")
    text: str = Field(description="The car's words, first person, in the message's locale.")
    locale: str
    persona: str = Field(description="The name the car signs with.")
    question: list[str] | None = Field(
        default=None, description="When the text asks the owner something: the answers the car understands.")
    data: dict[str, Any] = Field(
        default_factory=dict,
        description="The values behind the text (VSS names or rule fields); eta as ISO 8601 UTC.")


def message_json_schema() -> dict[str, Any]:
    return PersonaMessage.model_json_schema()
