"""Reference signing of carfriend commands (issue 7 protocol); pure functions plus the key file reader.

A command published on ``carfriend/v1/<vehicle_id>/cmd/<name>`` is the JSON object::

    {"id": "<unique>", "issued_at": "<ISO 8601 UTC>", "args": {...}, "sig": "<hex>"}

where ``sig`` is the lowercase hex HMAC-SHA256, keyed with the vehicle's key, of the canonical
JSON (``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` encoded as
UTF-8) of ``{"vehicle_id", "command", "id", "issued_at", "args"}``. Binding the vehicle id and
the command name into the signature means a command cannot be replayed on another car or as
another command.

The key file holds the key as text; surrounding whitespace (a trailing newline) is stripped and
the remaining UTF-8 bytes are the HMAC key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.core.errors import ConfigError

VEHICLE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signature(key: bytes, vehicle_id: str, command: str, command_id: str, issued_at: str,
              args: dict[str, Any]) -> str:
    signed = {"vehicle_id": vehicle_id, "command": command, "id": command_id,
              "issued_at": issued_at, "args": args}
    return hmac.new(key, canonical_json(signed), hashlib.sha256).hexdigest()


def iso_utc(ts: datetime) -> str:
    """2026-11-22T02:15:00.000Z; ``ts`` is UTC (naive or aware)."""
    return ts.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def sign_command(key: bytes, vehicle_id: str, command: str, args: dict[str, Any],
                 issued_at: datetime, command_id: str | None = None) -> dict[str, Any]:
    """The payload to publish on carfriend/v1/<vehicle_id>/cmd/<command>."""
    cid = command_id or str(uuid.uuid4())
    issued = iso_utc(issued_at)
    return {"id": cid, "issued_at": issued, "args": args,
            "sig": signature(key, vehicle_id, command, cid, issued, args)}


def verify_command(key: bytes, vehicle_id: str, command: str, payload: dict[str, Any]) -> bool:
    """True when the payload's sig is right for this vehicle and command (constant-time compare)."""
    try:
        expected = signature(key, vehicle_id, command, payload["id"], payload["issued_at"],
                             payload["args"])
    except (KeyError, TypeError):
        return False
    sig = payload.get("sig")
    return isinstance(sig, str) and hmac.compare_digest(expected, sig)


def key_path(keys_dir: Path, vehicle_id: str) -> Path:
    if not VEHICLE_ID.match(vehicle_id):  # never let an id walk out of the keys directory
        raise ConfigError(f"invalid vehicle id {vehicle_id[:64]!r}")
    return keys_dir / f"{vehicle_id}.key"


def load_key(keys_dir: Path, vehicle_id: str) -> bytes:
    """The vehicle's key from <keys_dir>/<vehicle_id>.key; the error names the file, never the key."""
    path = key_path(keys_dir, vehicle_id)
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the key of vehicle {vehicle_id!r}: "
                          f"{exc.strerror or exc}") from None
    if len(key) < 16:
        raise ConfigError(f"{path}: the key of vehicle {vehicle_id!r} is shorter than 16 bytes")
    return key
