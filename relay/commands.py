"""Build, sign, record and publish the commands people send from the web app (does IO)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from agent.core.errors import ConfigError
from relay.config import CommandsConfig, topic
from relay.models import Command, Message, utcnow
from relay.signing import load_key, sign_command

log = logging.getLogger(__name__)

# Commands the web app offers (issue 7); the car has the final word on each.
WEB_COMMANDS = ("reply", "climate.start", "climate.stop", "charge.start", "charge.stop",
                "charge.limit", "charge.schedule", "status.request", "ping")


class CommandRefused(Exception):
    """The relay will not send this command; the message is safe to show to the user."""


@dataclass(frozen=True)
class Downlink:
    """Where signed commands go: the keys directory and a publish function (paho's, in the app)."""

    keys_dir: Path
    publish: Callable[[str, bytes], Any]
    limits: CommandsConfig


def command_args(name: str, form: dict[str, str], limits: CommandsConfig) -> dict[str, Any]:
    """The args of a command from form fields, checked; raises CommandRefused."""
    if name not in WEB_COMMANDS or name == "reply":
        raise CommandRefused("unknown command")
    if name == "climate.start":
        target = _number(form.get("target_c", "21"), "temperature")
        if not limits.climate_min_c <= target <= limits.climate_max_c:
            raise CommandRefused(f"temperature must be between {limits.climate_min_c:g} and "
                                 f"{limits.climate_max_c:g} °C")
        return {"target_c": target}
    if name == "charge.limit":
        pct = _number(form.get("limit_pct", ""), "charge limit")
        if not 50 <= pct <= 100:
            raise CommandRefused("charge limit must be between 50 and 100 %")
        return {"limit_pct": int(pct)}
    if name == "charge.schedule":
        return {"at": "off-peak"}
    return {}


def reply_args(message: Message | None, answer: str) -> dict[str, Any]:
    if message is None or not message.question:
        raise CommandRefused("that message asked nothing")
    if answer not in message.question:
        raise CommandRefused("the car does not understand that answer")
    return {"message_id": message.msg_id, "answer": answer}


def send(session: Session, downlink: Downlink, vehicle_id: str, name: str, args: dict[str, Any],
         user_id: int | None, message_id: str | None = None) -> Command:
    """Sign, record (committed before it is published, so its results always find it), publish."""
    try:
        key = load_key(downlink.keys_dir, vehicle_id)
    except ConfigError as exc:
        log.error("cannot sign %s for %s: %s", name, vehicle_id, exc)
        raise CommandRefused("this car has no command key on the relay") from None
    now = utcnow()
    payload = sign_command(key, vehicle_id, name, args, now)
    cmd = Command(id=payload["id"], vehicle_id=vehicle_id, name=name, args=args, issued_at=now,
                  issued_by=user_id, message_id=message_id, status="sent", updated_at=now)
    session.add(cmd)
    session.commit()
    downlink.publish(topic(vehicle_id, f"cmd/{name}"), json.dumps(payload).encode())
    log.info("sent %s %s to %s", name, cmd.id, vehicle_id)
    return cmd


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise CommandRefused(f"{what} must be a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise CommandRefused(f"{what} must be a number")
    return value
