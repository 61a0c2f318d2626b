"""The owner's data: everything the relay keeps about one car, exported as JSON or as CSV files
in a ZIP, and the car's history deleted on request (does IO through a Session)."""

from __future__ import annotations

import csv
import io
import json
import logging
import zipfile
from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from relay.models import (
    Appointment,
    Base,
    Command,
    CommandResult,
    FleetReport,
    Membership,
    Message,
    Notification,
    NotifyChannel,
    NotifyMute,
    Purge,
    PushSubscription,
    StateRecord,
    User,
    Vehicle,
    utcnow,
)
from relay.store import lock_vehicles

log = logging.getLogger(__name__)

# The car's history: exported, and deleted by a purge (in this order: the notifications of its
# messages before the messages).
HISTORY: dict[str, Any] = {
    "notifications": Notification,
    "messages": Message,
    "state_history": StateRecord,
    "commands": Command,
    "command_results": CommandResult,
    "appointments": Appointment,
    "fleet_reports": FleetReport,
}
# Also about the car, exported and kept by a purge: who may see it (roles), who muted its
# notifications, and the record of earlier purges.
KEPT: dict[str, Any] = {
    "memberships": Membership,
    "notify_mutes": NotifyMute,
    "purges": Purge,
}
# Every table with a vehicle_id column is one of these (tests/relay/test_relay_privacy.py).
TABLES: dict[str, Any] = {**HISTORY, **KEPT}
# Where the car's notifications went: a user's browser (push_subscriptions) or channel
# (notify_channels). Their non-secret columns only: a push endpoint and its keys, or a channel's
# URL, would let whoever holds them send to that user.
TARGETS = ("target", "user", "kind", "label", "created_at")
VEHICLE_FIELDS = ("id", "name", "created_at", "public_feed", "status", "status_at", "last_seen",
                  "state", "state_at", "fleet", "fleet_at", "health", "health_at")
# The vehicle's columns left out of an export: the relay's own bookkeeping, no data about the car.
VEHICLE_INTERNAL = ("history_at", "revision", "msg_seq")
ORDER = {"commands": "issued_at", "memberships": "id", "notify_mutes": "id",
         "notifications": "id"}  # the others by their row number


def columns(name: str) -> list[str]:
    """The columns of an exported table, in its CSV's order (with the user's name where the
    table holds a user id)."""
    if name == "vehicle":
        return list(VEHICLE_FIELDS)
    if name == "notify_targets":
        return list(TARGETS)
    cols = [c.key for c in TABLES[name].__table__.columns]
    return cols + ["user"] if "user_id" in cols else cols


def export_vehicle(s: Session, vehicle_id: str, now: datetime | None = None) -> dict[str, Any]:
    """Every row the relay keeps about the vehicle, as plain values (JSON-ready but for
    datetimes, which the writers below format)."""
    vehicle = s.get(Vehicle, vehicle_id)
    if vehicle is None:
        raise KeyError(vehicle_id)
    out: dict[str, Any] = {"exported_at": now or utcnow(),
                           "vehicle": {f: getattr(vehicle, f) for f in VEHICLE_FIELDS}}
    names: dict[int, str] = {uid: name for uid, name in s.execute(select(User.id, User.username))}
    for name, model in TABLES.items():
        cols = [c.key for c in model.__table__.columns]
        order = getattr(model, ORDER.get(name, "seq"))
        rows = []
        for row in s.scalars(select(model).where(model.vehicle_id == vehicle_id).order_by(order)):
            item = {c: getattr(row, c) for c in cols}
            if "user_id" in item:
                item["user"] = names.get(item["user_id"])
            rows.append(item)
        out[name] = rows
    # Other users' devices and channels are theirs, not the car's: their deliveries show who
    # was notified and when, without the channel's label or its last error (which names a host).
    owners = {m["user_id"] for m in out["memberships"] if m["role"] == "owner"}
    for row in out["notifications"]:
        if row["user_id"] not in owners:
            row["last_error"] = None
    out["notify_targets"] = _targets(s, {n["target"] for n in out["notifications"]}, names,
                                     owners)
    return out


def _targets(s: Session, targets: set[str], names: dict[int, str],
             owners: set[int]) -> list[dict[str, Any]]:
    """The browsers and channels the car's notifications went to (still registered); labels
    only for the owners' own."""
    ids: dict[str, list[int]] = {"push": [], "channel": []}
    for target in targets:
        kind, _, number = target.partition(":")
        if kind in ids and number.isdigit():
            ids[kind].append(int(number))
    out = []
    for sub in s.scalars(select(PushSubscription).where(PushSubscription.id.in_(ids["push"]))
                         .order_by(PushSubscription.id)):
        out.append({"target": f"push:{sub.id}", "user": names.get(sub.user_id),
                    "kind": "webpush", "created_at": sub.created_at,
                    "label": sub.label if sub.user_id in owners else None})
    for ch in s.scalars(select(NotifyChannel).where(NotifyChannel.id.in_(ids["channel"]))
                        .order_by(NotifyChannel.id)):
        out.append({"target": f"channel:{ch.id}", "user": names.get(ch.user_id),
                    "kind": ch.scheme, "created_at": ch.created_at,
                    "label": ch.label if ch.user_id in owners else None})
    return out


def vehicle_tables() -> set[str]:
    """Every table of the schema with a vehicle_id column: data about one car."""
    return {t.name for t in Base.metadata.sorted_tables if "vehicle_id" in t.columns}


def to_json(export: dict[str, Any]) -> bytes:
    return json.dumps(export, default=_plain, indent=1, allow_nan=True).encode()


def to_csv_zip(export: dict[str, Any]) -> bytes:
    """One CSV per table (vehicle.csv for the vehicle's own row); JSON columns as JSON text."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, rows in [("vehicle", [export["vehicle"]])] + \
                [(n, export[n]) for n in (*TABLES, "notify_targets")]:
            zf.writestr(f"{name}.csv", _csv(rows, name))
    return buffer.getvalue()


def _csv(rows: list[dict[str, Any]], name: str) -> bytes:
    text = io.StringIO()
    header = columns(name)
    writer = csv.writer(text)
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in header])
    # Text from a car may hold lone surrogates (stored before the ingest checks): replaced.
    return text.getvalue().encode("utf-8", "replace")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        value = json.dumps(value, default=_plain, ensure_ascii=False)
    elif isinstance(value, datetime):
        value = _plain(value)
    text = str(value)
    # A spreadsheet would run a cell starting with these as a formula (CSV injection): the
    # text comes from a car, so it is quoted as text.
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds") + "Z"
    raise TypeError(f"cannot export {type(value).__name__}")


def purge_vehicle(s: Session, vehicle_id: str, by: str) -> Counter[str]:
    """Delete the vehicle's history (every table of HISTORY) and its latest state, status,
    fleet report and health; the registration, its key, the roles, the mutes and the record of
    purges stay. Logged, and recorded in `purges`, with who asked and what went. The caller
    commits."""
    vehicles = lock_vehicles(s, [vehicle_id])  # the ingest waits: nothing half-deleted shows
    vehicle = vehicles.get(vehicle_id)
    if vehicle is None:
        raise KeyError(vehicle_id)
    deleted = Counter[str]()
    for name, model in HISTORY.items():
        result: Any = s.execute(delete(model).where(model.vehicle_id == vehicle_id))
        deleted[name] = result.rowcount or 0
    s.add(Purge(vehicle_id=vehicle_id, at=utcnow(), by=by[:64], deleted=dict(deleted)))
    vehicle.state = vehicle.state_at = vehicle.history_at = None
    vehicle.fleet = vehicle.fleet_at = vehicle.status = vehicle.status_at = None
    vehicle.health = vehicle.health_at = None
    vehicle.last_seen = None
    vehicle.revision += 1
    log.warning("history of %s purged by %s: %s", vehicle_id, by,
                ", ".join(f"{k} {v}" for k, v in deleted.items()))
    return deleted
