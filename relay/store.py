"""Write checked records to the database, one transaction per batch, duplicates ignored (does IO)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from relay.ingest import (
    Inbound,
    InboundHealth,
    InboundMessage,
    InboundResult,
    InboundState,
    appointment_key,
    naive_utc,
)
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

log = logging.getLogger(__name__)

# A result never moves a command backwards (results may arrive out of order or twice).
STATUS_RANK = {"sent": 0, "accepted": 1, "rejected": 2, "completed": 2, "failed": 2}


@dataclass
class _Batch:
    """What one batch changes, collected first so each table gets one statement per batch."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    # vehicle -> [(ts, is a full snapshot, the batch's signals at that time)], at most one per
    # state_history_min_interval_s of event time
    history: dict[str, list[tuple[datetime, bool, dict[str, Any]]]] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    appointments: list[dict[str, Any]] = field(default_factory=list)
    fleet_reports: list[dict[str, Any]] = field(default_factory=list)
    # vehicle -> (ts of the newest document, replaces the stored state?, signals to apply)
    state: dict[str, tuple[datetime, bool, dict[str, Any]]] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    fleet: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    health: dict[str, tuple[datetime, dict[str, Any]]] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)


class Store:
    """Applies batches of Inbound records; remembers when it last kept each vehicle's state history."""

    def __init__(self, state_history_min_interval_s: float, max_signals: int = 64) -> None:
        self._history_every = timedelta(seconds=state_history_min_interval_s)
        self._history_at: dict[str, datetime] = {}
        self.max_signals = max_signals
        # Signals the last apply() left out because a vehicle's state was full (a car sending
        # ever new names must not grow every history row).
        self.trimmed = 0

    def apply(self, session: Session, records: Iterable[Inbound], now: datetime) -> set[str]:
        """Add the records to the session (the caller commits); returns the vehicles touched."""
        batch, touched = _Batch(), set()
        for rec in records:
            getattr(self, f"_{rec.leaf}")(batch, rec, now)
            touched.add(rec.vehicle_id)
        self.trimmed = 0
        if touched:
            self.trimmed = _write(session, batch, now, self.max_signals)
            session.execute(update(Vehicle).where(Vehicle.id.in_(touched))
                            .values(revision=Vehicle.revision + 1))
        return touched

    def _messages(self, batch: _Batch, rec: Inbound, now: datetime) -> None:
        msg: InboundMessage = rec.body
        batch.messages.append(dict(
            vehicle_id=rec.vehicle_id, msg_id=msg.id, ts=naive_utc(msg.ts), received_at=now,
            kind=msg.kind, severity=msg.severity, visibility=msg.visibility, text=msg.text,
            locale=msg.locale, persona=msg.persona, question=msg.question, data=msg.data))
        batch.seen.add(rec.vehicle_id)

    def _state(self, batch: _Batch, rec: Inbound, now: datetime) -> None:
        state: InboundState = rec.body
        ts = naive_utc(state.ts)
        signals = state.entries()
        pending = batch.state.get(rec.vehicle_id)
        if pending is None or pending[0] <= ts:
            if state.full or pending is None:
                batch.state[rec.vehicle_id] = (ts, state.full, signals)
            else:  # a delta on top of what this batch already has
                batch.state[rec.vehicle_id] = (ts, pending[1], {**pending[2], **signals})
            last = self._history_at.get(rec.vehicle_id)
            if last is None or ts - last >= self._history_every:
                self._history_at[rec.vehicle_id] = ts
                _ts, full, signals = batch.state[rec.vehicle_id]
                batch.history.setdefault(rec.vehicle_id, []).append((ts, full, dict(signals)))
        batch.seen.add(rec.vehicle_id)

    def _status(self, batch: _Batch, rec: Inbound, now: datetime) -> None:
        batch.status[rec.vehicle_id] = rec.body
        if rec.body == "online":
            batch.seen.add(rec.vehicle_id)

    def _result(self, batch: _Batch, rec: Inbound, now: datetime) -> None:
        res: InboundResult = rec.body
        batch.results.append(dict(
            vehicle_id=rec.vehicle_id, command_id=res.id, name=rec.command, status=res.status,
            reason=res.reason, ts=naive_utc(res.ts) if res.ts else now, received_at=now))
        batch.seen.add(rec.vehicle_id)

    def _appointment(self, batch: _Batch, rec: Inbound, now: datetime) -> None:
        doc: dict[str, Any] = rec.body
        service = doc.get("service_type") or doc.get("service") or ""
        batch.appointments.append(dict(
            vehicle_id=rec.vehicle_id, dedup_key=appointment_key(doc), received_at=now,
            service_type=str(service)[:100], payload=doc))
        batch.seen.add(rec.vehicle_id)

    def _fleet(self, batch: _Batch, rec: Inbound, now: datetime) -> None:
        batch.fleet_reports.append(dict(vehicle_id=rec.vehicle_id, received_at=now,
                                        report=rec.body))
        # The latest report of each kind (outbox.status, outbox.dropped, ...).
        kind = str(rec.body.get("kind") or "report")[:64]
        batch.fleet.setdefault(rec.vehicle_id, {})[kind] = rec.body
        batch.seen.add(rec.vehicle_id)

    def _health(self, batch: _Batch, rec: Inbound, now: datetime) -> None:
        doc: InboundHealth = rec.body
        ts = naive_utc(doc.ts)
        if rec.vehicle_id not in batch.health or batch.health[rec.vehicle_id][0] <= ts:
            batch.health[rec.vehicle_id] = (ts, doc.model_dump(mode="json"))
        batch.seen.add(rec.vehicle_id)


def _write(session: Session, b: _Batch, now: datetime, max_signals: int) -> int:
    """Everything of the batch into the session; returns the signals left out (state full)."""
    trimmed = 0
    _insert_ignore(session, Message, b.messages)
    _insert_ignore(session, Appointment, b.appointments)
    _insert_ignore(session, CommandResult, b.results)
    if b.fleet_reports:
        session.execute(insert(FleetReport), b.fleet_reports)
    for vid, (ts, full, signals) in b.state.items():
        trimmed += _apply_state(session, b, vid, ts, full, signals, now, max_signals)
    for vid, status in b.status.items():
        session.execute(update(Vehicle).where(Vehicle.id == vid)
                        .values(status=status, status_at=now))
    for vid, reports in b.fleet.items():
        vehicle = session.get(Vehicle, vid)
        if vehicle is not None:
            vehicle.fleet, vehicle.fleet_at = {**(vehicle.fleet or {}), **reports}, now
    for vid, (_ts, doc) in b.health.items():  # the newest document wins (retained, QoS 0)
        vehicle = session.get(Vehicle, vid)
        old_ts = (vehicle.health or {}).get("ts") if vehicle is not None else None
        if vehicle is not None and (not isinstance(old_ts, str) or old_ts <= doc["ts"]):
            vehicle.health, vehicle.health_at = doc, now
    for row in b.results:
        _advance_command(session, row, now)
    if b.seen:
        session.execute(update(Vehicle).where(Vehicle.id.in_(b.seen)).values(last_seen=now))
    return trimmed


def _apply_state(session: Session, b: _Batch, vid: str, ts: datetime, full: bool,
                 signals: dict[str, Any], now: datetime, max_signals: int) -> int:
    """The latest state: a full snapshot replaces it, a delta is applied on top; an older
    document arriving late changes nothing. History keeps the merged snapshot. A vehicle keeps
    at most max_signals signals: new names beyond are left out (returns how many)."""
    vehicle = session.get(Vehicle, vid)
    if vehicle is None or (vehicle.state_at is not None and vehicle.state_at > ts):
        return 0
    before = vehicle.state or {}
    for h_ts, h_full, h_signals in b.history.get(vid, ()):
        if vehicle.state_at is None or h_ts >= vehicle.state_at:
            merged, _ = merge_signals({} if h_full else before, h_signals, max_signals)
            session.add(StateRecord(vehicle_id=vid, ts=h_ts, received_at=now, signals=merged))
    vehicle.state, trimmed = merge_signals({} if full else before, signals, max_signals)
    vehicle.state_at = ts
    return trimmed


def merge_signals(before: dict[str, Any], delta: dict[str, Any],
                  cap: int) -> tuple[dict[str, Any], int]:
    """before with delta applied; a name not in before is added only while there are fewer
    than cap signals. Returns the merged signals and how many names were left out."""
    merged, left_out = dict(before), 0
    for path, entry in delta.items():
        if path in merged or len(merged) < cap:
            merged[path] = entry
        else:
            left_out += 1
    return merged, left_out


def _advance_command(session: Session, row: dict[str, Any], now: datetime) -> None:
    cmd = session.get(Command, row["command_id"])
    if cmd is not None and cmd.vehicle_id == row["vehicle_id"] and \
            STATUS_RANK[row["status"]] > STATUS_RANK.get(cmd.status, 0):
        cmd.status, cmd.reason, cmd.updated_at = row["status"], row["reason"], now


def _insert_ignore(session: Session, model: type[Any], rows: list[dict[str, Any]]) -> None:
    """INSERT that skips rows violating a unique constraint (duplicates), on SQLite and PostgreSQL."""
    if not rows:
        return
    name = session.get_bind().dialect.name
    dialect: Any = postgresql if name == "postgresql" else sqlite
    session.execute(dialect.insert(model).on_conflict_do_nothing(), rows)


def known_vehicles(session: Session) -> set[str]:
    return set(session.scalars(select(Vehicle.id)))


def now_utc() -> datetime:
    return utcnow()
