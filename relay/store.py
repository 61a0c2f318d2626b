"""Write checked records to the database, one transaction per batch, duplicates ignored (does IO)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from relay.ingest import (
    Inbound,
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


class Store:
    """Applies batches of Inbound records; remembers when it last kept each vehicle's state history."""

    def __init__(self, state_history_min_interval_s: float) -> None:
        self._history_every = timedelta(seconds=state_history_min_interval_s)
        self._history_at: dict[str, datetime] = {}

    def apply(self, session: Session, records: Iterable[Inbound], now: datetime) -> set[str]:
        """Add the records to the session (the caller commits); returns the vehicles touched."""
        touched: set[str] = set()
        for rec in records:
            getattr(self, f"_{rec.leaf}")(session, rec, now)
            touched.add(rec.vehicle_id)
        if touched:
            stmt = (update(Vehicle).where(Vehicle.id.in_(touched))
                    .values(revision=Vehicle.revision + 1))
            session.execute(stmt)
        return touched

    def _messages(self, session: Session, rec: Inbound, now: datetime) -> None:
        msg: InboundMessage = rec.body
        _insert_ignore(session, Message, dict(
            vehicle_id=rec.vehicle_id, msg_id=msg.id, ts=naive_utc(msg.ts), received_at=now,
            kind=msg.kind, severity=msg.severity, visibility=msg.visibility, text=msg.text,
            locale=msg.locale, persona=msg.persona, question=msg.question, data=msg.data))
        _seen(session, rec.vehicle_id, now)

    def _state(self, session: Session, rec: Inbound, now: datetime) -> None:
        state: InboundState = rec.body
        ts = naive_utc(state.ts)
        signals = state.signals
        session.execute(update(Vehicle).where(Vehicle.id == rec.vehicle_id)
                        .where((Vehicle.state_at.is_(None)) | (Vehicle.state_at <= ts))
                        .values(state=signals, state_at=ts))
        last = self._history_at.get(rec.vehicle_id)
        if last is None or ts - last >= self._history_every or ts < last:
            self._history_at[rec.vehicle_id] = ts
            session.add(StateRecord(vehicle_id=rec.vehicle_id, ts=ts, received_at=now,
                                    signals=signals))
        _seen(session, rec.vehicle_id, now)

    def _status(self, session: Session, rec: Inbound, now: datetime) -> None:
        values: dict[str, Any] = {"status": rec.body, "status_at": now}
        session.execute(update(Vehicle).where(Vehicle.id == rec.vehicle_id).values(**values))
        if rec.body == "online":
            _seen(session, rec.vehicle_id, now)

    def _result(self, session: Session, rec: Inbound, now: datetime) -> None:
        res: InboundResult = rec.body
        ts = naive_utc(res.ts) if res.ts else now
        _insert_ignore(session, CommandResult, dict(
            vehicle_id=rec.vehicle_id, command_id=res.id, name=rec.command, status=res.status,
            reason=res.reason, ts=ts, received_at=now))
        cmd = session.get(Command, res.id)
        if cmd is not None and cmd.vehicle_id == rec.vehicle_id and \
                STATUS_RANK[res.status] > STATUS_RANK.get(cmd.status, 0):
            cmd.status, cmd.reason, cmd.updated_at = res.status, res.reason, now
        _seen(session, rec.vehicle_id, now)

    def _appointment(self, session: Session, rec: Inbound, now: datetime) -> None:
        doc: dict[str, Any] = rec.body
        service = doc.get("service_type") or doc.get("service") or ""
        _insert_ignore(session, Appointment, dict(
            vehicle_id=rec.vehicle_id, dedup_key=appointment_key(doc), received_at=now,
            service_type=str(service)[:100], payload=doc))
        _seen(session, rec.vehicle_id, now)

    def _fleet(self, session: Session, rec: Inbound, now: datetime) -> None:
        session.add(FleetReport(vehicle_id=rec.vehicle_id, received_at=now, report=rec.body))
        session.execute(update(Vehicle).where(Vehicle.id == rec.vehicle_id)
                        .values(fleet=rec.body, fleet_at=now))
        _seen(session, rec.vehicle_id, now)


def _seen(session: Session, vehicle_id: str, now: datetime) -> None:
    session.execute(update(Vehicle).where(Vehicle.id == vehicle_id).values(last_seen=now))


def _insert_ignore(session: Session, model: type[Any], values: dict[str, Any]) -> None:
    """INSERT that skips a row violating a unique constraint (a duplicate), on SQLite and PostgreSQL."""
    name = session.get_bind().dialect.name
    dialect: Any = postgresql if name == "postgresql" else sqlite
    session.execute(dialect.insert(model).values(**values).on_conflict_do_nothing())


def known_vehicles(session: Session) -> set[str]:
    return set(session.scalars(select(Vehicle.id)))


def now_utc() -> datetime:
    return utcnow()
