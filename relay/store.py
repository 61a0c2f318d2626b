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
    iso_z,
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
    results: list[dict[str, Any]] = field(default_factory=list)
    appointments: list[dict[str, Any]] = field(default_factory=list)
    fleet_reports: list[dict[str, Any]] = field(default_factory=list)
    # vehicle -> its state documents in this batch: (ts, is a full snapshot, signals)
    state: dict[str, list[tuple[datetime, bool, dict[str, Any]]]] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    fleet: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    health: dict[str, tuple[datetime, dict[str, Any]]] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)


class Store:
    """Applies batches of Inbound records (any number of Stores, in any number of processes,
    may write to one database at once)."""

    def __init__(self, state_history_min_interval_s: float, max_signals: int = 64) -> None:
        self.history_every = timedelta(seconds=state_history_min_interval_s)
        self.max_signals = max_signals
        # Signals the last apply() left out because a vehicle's state was full (a car sending
        # ever new names must not grow every history row).
        self.trimmed = 0

    def apply(self, session: Session, records: Iterable[Inbound], now: datetime) -> set[str]:
        """Add the records to the session (the caller commits); returns the vehicles touched.

        The rows of the vehicles touched are locked first (in id order, so two relay instances
        never deadlock), then everything is read and written in a few statements per batch."""
        batch, touched = _Batch(), set()
        for rec in records:
            getattr(self, f"_{rec.leaf}")(batch, rec, now)
            touched.add(rec.vehicle_id)
        self.trimmed = 0
        if touched:
            vehicles = lock_vehicles(session, touched)
            self.trimmed = _write(session, batch, vehicles, now, self.max_signals,
                                  self.history_every)
            for vehicle in vehicles.values():
                vehicle.revision += 1
            session.flush()
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
        batch.state.setdefault(rec.vehicle_id, []).append(
            (naive_utc(state.ts), state.full, state.entries()))
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
                                        dedup_key=appointment_key(rec.body), report=rec.body))
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


def lock_vehicles(session: Session, ids: Iterable[str]) -> dict[str, Vehicle]:
    """The vehicles' rows, locked until the transaction ends, so what is read here cannot change
    before the commit (another relay instance, or another writer thread, waits). PostgreSQL:
    FOR NO KEY UPDATE in id order (no deadlocks; foreign-key checks of concurrent inserts do not
    wait for it). SQLite: a first statement that writes takes the database's write lock, waiting
    its busy timeout, before anything is read."""
    ordered = sorted(ids)
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(Vehicle).where(Vehicle.id.in_(ordered))
                        .values(revision=Vehicle.revision))
    query = (select(Vehicle).where(Vehicle.id.in_(ordered)).order_by(Vehicle.id)
             .with_for_update(key_share=True).execution_options(populate_existing=True))
    return {v.id: v for v in session.scalars(query)}


def _write(session: Session, b: _Batch, vehicles: dict[str, Vehicle], now: datetime,
           max_signals: int, history_every: timedelta) -> int:
    """Everything of the batch into the session; returns the signals left out (state full)."""
    trimmed = 0
    _number_messages(b.messages, vehicles)
    _insert_ignore(session, Message, b.messages, "vehicle_id", "msg_id")
    _insert_ignore(session, Appointment, b.appointments, "vehicle_id", "dedup_key")
    _insert_ignore(session, CommandResult, b.results, "vehicle_id", "command_id", "status")
    # Each relay instance with its own subscription stores every report: once, by content.
    _insert_ignore(session, FleetReport, b.fleet_reports, "vehicle_id", "dedup_key")
    history: list[dict[str, Any]] = []
    for vid, docs in b.state.items():
        if vid in vehicles:
            trimmed += _apply_state(vehicles[vid], docs, now, max_signals, history_every, history)
    if history:
        session.execute(insert(StateRecord), history)
    for vid, status in b.status.items():
        if vid in vehicles:
            vehicles[vid].status, vehicles[vid].status_at = status, now
    for vid, reports in b.fleet.items():
        if vid in vehicles:
            vehicle = vehicles[vid]
            vehicle.fleet, vehicle.fleet_at = {**(vehicle.fleet or {}), **reports}, now
    for vid, (_ts, doc) in b.health.items():  # the newest document wins (retained, QoS 0)
        if vid in vehicles:
            old_ts = (vehicles[vid].health or {}).get("ts")
            if not isinstance(old_ts, str) or old_ts <= doc["ts"]:
                vehicles[vid].health, vehicles[vid].health_at = doc, now
    _advance_commands(session, b.results, now)
    for vid in b.seen:
        if vid in vehicles:
            vehicles[vid].last_seen = now
    return trimmed


def add_messages(session: Session, rows: list[dict[str, Any]]) -> None:
    """Store messages made outside the ingest (tools, tests), numbered like the ingest's."""
    _number_messages(rows, lock_vehicles(session, {row["vehicle_id"] for row in rows}))
    _insert_ignore(session, Message, rows, "vehicle_id", "msg_id")


def _number_messages(rows: list[dict[str, Any]], vehicles: dict[str, Vehicle]) -> None:
    """Each message its vehicle's next vseq, under the vehicle's row lock (commit order). A
    duplicate (skipped by the insert) leaves a gap, which readers do not mind."""
    for row in rows:
        vehicle = vehicles.get(row["vehicle_id"])
        if vehicle is None:  # not registered: the foreign key refuses the row
            row["vseq"] = 0
            continue
        vehicle.msg_seq = (vehicle.msg_seq or 0) + 1
        row["vseq"] = vehicle.msg_seq


def _apply_state(vehicle: Vehicle, docs: list[tuple[datetime, bool, dict[str, Any]]],
                 now: datetime, max_signals: int, history_every: timedelta,
                 rows: list[dict[str, Any]]) -> int:
    """Apply a vehicle's state documents in arrival order (the caller holds its row lock), with
    the same result as one batch each.
    A full snapshot replaces the state, a delta goes on top. A document older than the state
    (it arrived late, or through another relay instance) changes only the signals it has newer
    values of, by each signal's own ts (a late full snapshot changes nothing). History (appended
    to rows) keeps the merged snapshot at most every history_every of event time. A vehicle
    keeps at most max_signals signals: new names beyond are left out (returns how many)."""
    trimmed = 0
    for ts, full, signals in docs:
        before = vehicle.state or {}
        if vehicle.state_at is None or ts >= vehicle.state_at:
            vehicle.state, left_out = merge_signals({} if full else before, signals, max_signals)
            vehicle.state_at = ts
        elif not full:
            newer = {path: entry for path, entry in signals.items()
                     if _is_newer(entry, ts, before.get(path), vehicle.state_at)}
            if not newer:
                continue
            vehicle.state, left_out = merge_signals(before, newer, max_signals)
        else:
            continue
        trimmed += left_out
        if vehicle.history_at is None or ts - vehicle.history_at >= history_every:
            vehicle.history_at = ts
            rows.append(dict(vehicle_id=vehicle.id, ts=ts, received_at=now,
                             signals=dict(vehicle.state)))
    return trimmed


def _is_newer(entry: dict[str, Any], doc_ts: datetime, kept: Any, state_at: datetime) -> bool:
    """Whether a late delta's signal is newer than the kept one, by the signals' own ts (the
    document's when a signal has none). Both are the ingest's ISO form, so they compare as text."""
    if not isinstance(kept, dict):
        return True
    new_ts, old_ts = entry.get("ts"), kept.get("ts")
    new = new_ts if isinstance(new_ts, str) else iso_z(doc_ts)
    old = old_ts if isinstance(old_ts, str) else iso_z(state_at)
    return new > old


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


def _advance_commands(session: Session, results: list[dict[str, Any]], now: datetime) -> None:
    """Move each command forward by its results (one SELECT for the batch's commands)."""
    if not results:
        return
    ids = sorted({row["command_id"] for row in results})
    commands = {c.id: c for c in session.scalars(select(Command).where(Command.id.in_(ids)))}
    for row in results:
        cmd = commands.get(row["command_id"])
        if cmd is not None and cmd.vehicle_id == row["vehicle_id"] and \
                STATUS_RANK[row["status"]] > STATUS_RANK.get(cmd.status, 0):
            cmd.status, cmd.reason, cmd.updated_at = row["status"], row["reason"], now


def _insert_ignore(session: Session, model: type[Any], rows: list[dict[str, Any]],
                   *key: str) -> None:
    """INSERT that skips duplicates: rows violating the unique constraint on the key columns,
    on SQLite and PostgreSQL (any other violation still fails the statement)."""
    if not rows:
        return
    name = session.get_bind().dialect.name
    dialect: Any = postgresql if name == "postgresql" else sqlite
    session.execute(dialect.insert(model).on_conflict_do_nothing(index_elements=list(key)), rows)


def known_vehicles(session: Session) -> set[str]:
    return set(session.scalars(select(Vehicle.id)))


def now_utc() -> datetime:
    return utcnow()
