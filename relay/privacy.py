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
    Command,
    CommandResult,
    FleetReport,
    Message,
    StateRecord,
    Vehicle,
    utcnow,
)
from relay.store import lock_vehicles

log = logging.getLogger(__name__)

# What an export holds, table by table, in this order (and what a purge deletes).
TABLES: dict[str, Any] = {
    "messages": Message,
    "state_history": StateRecord,
    "commands": Command,
    "command_results": CommandResult,
    "appointments": Appointment,
    "fleet_reports": FleetReport,
}
VEHICLE_FIELDS = ("id", "name", "created_at", "public_feed", "status", "status_at", "last_seen",
                  "state", "state_at", "fleet", "fleet_at", "health", "health_at")
ORDER = {"commands": "issued_at"}  # the others by their row number


def export_vehicle(s: Session, vehicle_id: str, now: datetime | None = None) -> dict[str, Any]:
    """Every row the relay keeps about the vehicle, as plain values (JSON-ready but for
    datetimes, which the writers below format)."""
    vehicle = s.get(Vehicle, vehicle_id)
    if vehicle is None:
        raise KeyError(vehicle_id)
    out: dict[str, Any] = {"exported_at": now or utcnow(),
                           "vehicle": {f: getattr(vehicle, f) for f in VEHICLE_FIELDS}}
    for name, model in TABLES.items():
        columns = [c.key for c in model.__table__.columns]
        order = getattr(model, ORDER.get(name, "seq"))
        out[name] = [{c: getattr(row, c) for c in columns} for row in s.scalars(
            select(model).where(model.vehicle_id == vehicle_id).order_by(order))]
    return out


def to_json(export: dict[str, Any]) -> bytes:
    return json.dumps(export, default=_plain, indent=1, allow_nan=True).encode()


def to_csv_zip(export: dict[str, Any]) -> bytes:
    """One CSV per table (vehicle.csv for the vehicle's own row); JSON columns as JSON text."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, rows in [("vehicle", [export["vehicle"]])] + \
                [(n, export[n]) for n in TABLES]:
            zf.writestr(f"{name}.csv", _csv(rows, name))
    return buffer.getvalue()


def _csv(rows: list[dict[str, Any]], name: str) -> bytes:
    text = io.StringIO()
    model = TABLES.get(name)
    header = [c.key for c in model.__table__.columns] if model is not None else list(VEHICLE_FIELDS)
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
    """Delete the vehicle's history (every table of TABLES; the notifications of its messages
    go with them) and its latest state, status, fleet report and health; the registration, its
    key and the roles stay. Logged with who asked and what
    went. The caller commits."""
    vehicles = lock_vehicles(s, [vehicle_id])  # the ingest waits: nothing half-deleted shows
    vehicle = vehicles.get(vehicle_id)
    if vehicle is None:
        raise KeyError(vehicle_id)
    deleted = Counter[str]()
    for name, model in TABLES.items():
        result: Any = s.execute(delete(model).where(model.vehicle_id == vehicle_id))
        deleted[name] = result.rowcount or 0
    vehicle.state = vehicle.state_at = vehicle.history_at = None
    vehicle.fleet = vehicle.fleet_at = vehicle.status = vehicle.status_at = None
    vehicle.health = vehicle.health_at = None
    vehicle.last_seen = None
    vehicle.revision += 1
    log.warning("history of %s purged by %s: %s", vehicle_id, by,
                ", ".join(f"{k} {v}" for k, v in deleted.items()))
    return deleted
