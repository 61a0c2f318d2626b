"""Read side of the web app: what a user may see, as plain rows (does IO through a Session)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from relay import charts
from relay.models import Appointment, Command, Membership, Message, StateRecord, User, Vehicle
from relay.permissions import ALERT_SEVERITIES, Access

DTC_LIST = "Vehicle.Diagnostics.DTCList"


def access(session: Session, user_id: int, vehicle_id: str) -> Access:
    rows = session.scalars(select(Membership.role).where(
        Membership.user_id == user_id,
        or_(Membership.vehicle_id == vehicle_id,
            (Membership.vehicle_id.is_(None)) & (Membership.role == "operator"))))
    return Access(frozenset(rows))


def my_vehicles(session: Session, user_id: int) -> list[tuple[Vehicle, frozenset[str]]]:
    """Every vehicle the user has a role on (fleet-wide operators: every vehicle)."""
    roles: dict[str, set[str]] = {}
    fleet_wide = False
    for vid, role in session.execute(select(Membership.vehicle_id, Membership.role)
                                     .where(Membership.user_id == user_id)):
        if vid is None:
            fleet_wide = True
        else:
            roles.setdefault(vid, set()).add(role)
    query = select(Vehicle).order_by(Vehicle.id)
    if not fleet_wide:
        query = query.where(Vehicle.id.in_(roles))
    out = []
    for v in session.scalars(query):
        r = roles.get(v.id, set()) | ({"operator"} if fleet_wide else set())
        out.append((v, frozenset(r)))
    return out


def timeline_messages(session: Session, vehicle_id: str, acc: Access, after_seq: int = 0,
                      limit: int = 100) -> list[Message]:
    """The newest messages the user may read, oldest first (after_seq: only newer ones, by the
    vehicle's commit-ordered vseq)."""
    query = select(Message).where(Message.vehicle_id == vehicle_id, Message.vseq > after_seq)
    if acc.alerts_only:
        query = query.where(Message.severity.in_(ALERT_SEVERITIES))
    else:
        query = query.where(Message.visibility.in_(acc.visibilities))
    rows = list(session.scalars(query.order_by(Message.vseq.desc()).limit(limit)))
    return sorted(rows, key=lambda m: m.vseq)


def public_messages(session: Session, vehicle_id: str, limit: int = 50) -> list[Message]:
    rows = list(session.scalars(select(Message).where(
        Message.vehicle_id == vehicle_id, Message.visibility == "public")
        .order_by(Message.vseq.desc()).limit(limit)))
    return rows[::-1]


def recent_commands(session: Session, vehicle_id: str, since: datetime) -> list[Command]:
    return list(session.scalars(select(Command).where(
        Command.vehicle_id == vehicle_id, Command.issued_at >= since).order_by(Command.issued_at)))


def latest_eta(session: Session, vehicle_id: str) -> str | None:
    msg = session.scalars(select(Message).where(
        Message.vehicle_id == vehicle_id, Message.kind == "charge.started")
        .order_by(Message.vseq.desc()).limit(1)).first()
    eta = msg.data.get("eta") if msg is not None and isinstance(msg.data, dict) else None
    return eta if isinstance(eta, str) else None


def chart_samples(session: Session, vehicle_id: str, since: datetime,
                  limit: int = 20_000) -> list[charts.Sample]:
    """The state history since then, only the charted signals (extracted by the database, not
    whole snapshots), oldest first; the newest ``limit`` rows at most. Each signal's entry is
    taken whole: SQLite's JSON_EXTRACT of the value alone turns true into 1."""
    entries = [StateRecord.signals[path] for path in charts.PATHS]
    query = select(StateRecord.ts, *entries).where(StateRecord.vehicle_id == vehicle_id,
                                                   StateRecord.ts >= since)
    if session.get_bind().dialect.name == "sqlite":
        # A row holding Infinity or NaN (stored before the ingest checks) is JSON that SQLite's
        # functions refuse, failing the whole query: leave such rows out.
        query = query.where(func.json_valid(StateRecord.signals) == 1)
    rows = session.execute(query.order_by(StateRecord.ts.desc()).limit(limit)).all()
    return [charts.sample(ts, *(e.get("value") if isinstance(e, dict) else None for e in values))
            for ts, *values in reversed(rows)]


def appointments_for_dealer(session: Session, user_id: int) -> list[Appointment]:
    vids = select(Membership.vehicle_id).where(Membership.user_id == user_id,
                                               Membership.role == "dealer")
    return list(session.scalars(select(Appointment).where(Appointment.vehicle_id.in_(vids))
                                .order_by(Appointment.seq.desc()).limit(200)))


def appointments_for_vehicle(session: Session, vehicle_id: str) -> list[Appointment]:
    return list(session.scalars(select(Appointment).where(Appointment.vehicle_id == vehicle_id)
                                .order_by(Appointment.seq.desc()).limit(20)))


@dataclass
class FleetRow:
    vehicle: Vehicle
    alerts: int
    dtcs: list[str]
    backlog: Any
    oldest_unsent_s: Any
    dropped: Any
    health: dict[str, Any] = field(default_factory=dict)


FLEET_PAGE = 100  # vehicles per fleet page


@dataclass
class FleetView:
    rows: list[FleetRow]
    online: int = 0
    alerts: int = 0
    dtc_counts: list[tuple[str, int]] = field(default_factory=list)
    total: int = 0  # vehicles the operator has, on every page
    page: int = 1
    pages: int = 1


def fleet(session: Session, user_id: int, now: datetime, page: int = 1,
          per_page: int = FLEET_PAGE) -> FleetView:
    """One page of the operator's vehicles (by id) with their 24-hour alerts; the totals
    (vehicles, online, alerts) cover every page, the DTC summary this page. A few indexed
    queries whatever the fleet's size: nothing loads every vehicle."""
    if is_fleet_wide_operator(session, user_id):
        mine = None
    else:
        mine = select(Membership.vehicle_id).where(Membership.user_id == user_id,
                                                   Membership.role == "operator")

    def scope(query: Any, column: Any) -> Any:
        return query if mine is None else query.where(column.in_(mine))

    total, online = session.execute(scope(select(
        func.count(), func.count().filter(Vehicle.status == "online")).select_from(Vehicle),
        Vehicle.id)).one()
    pages = max(1, -(-int(total) // per_page))
    page = min(max(1, page), pages)
    vehicles = list(session.scalars(scope(select(Vehicle), Vehicle.id).order_by(Vehicle.id)
                                    .offset((page - 1) * per_page).limit(per_page)))
    recent = (Message.severity.in_(ALERT_SEVERITIES),
              Message.received_at >= now - timedelta(hours=24))
    alerts = dict(session.execute(
        select(Message.vehicle_id, func.count()).where(
            Message.vehicle_id.in_([v.id for v in vehicles]), *recent)
        .group_by(Message.vehicle_id)).all())
    all_alerts = session.scalar(scope(select(func.count()).select_from(Message).where(*recent),
                                      Message.vehicle_id))
    rows, dtc_total = [], Counter[str]()
    for v in vehicles:
        dtcs = active_dtcs(v.state)
        dtc_total.update(set(dtcs))
        health = outbox_health(v.fleet)
        rows.append(FleetRow(v, int(alerts.get(v.id, 0)), dtcs, health.get("queued_total"),
                             health.get("oldest_age_s"), _dropped(health.get("dropped")),
                             agent_health(v.health)))
    return FleetView(rows, online=int(online), alerts=int(all_alerts or 0),
                     dtc_counts=dtc_total.most_common(20), total=int(total), page=page,
                     pages=pages)


def active_dtcs(state: dict[str, Any] | None) -> list[str]:
    entry = (state or {}).get(DTC_LIST)
    value = entry.get("value") if isinstance(entry, dict) else None
    if isinstance(value, list):
        return [str(c)[:16] for c in value[:50]]
    return []


def outbox_health(fleet: dict[str, Any] | None) -> dict[str, Any]:
    """The agent's latest `outbox.status` report (docs/topics.md), leniently: {} when absent."""
    doc = (fleet or {}).get("outbox.status")
    health = doc.get("outbox") if isinstance(doc, dict) else None
    if not isinstance(health, dict):
        return {}
    return {k: v for k, v in health.items() if isinstance(v, int | float | dict) and k in
            ("queued_total", "oldest_age_s", "dropped")}


def agent_health(doc: dict[str, Any] | None) -> dict[str, Any]:
    """The fields of the agent's latest `health` document the fleet page shows, leniently (the
    ingest checked it; rows stored before may hold anything): {} when absent."""
    if not isinstance(doc, dict):
        return {}

    def part(name: str) -> dict[str, Any]:
        value = doc.get(name)
        return value if isinstance(value, dict) else {}

    state = part("bus").get("state")
    return {"version": str(doc.get("version") or "")[:32], "ts": doc.get("ts"),
            "bus_state": state if isinstance(state, str) else None,
            "per_s": part("frames").get("per_s"), "cpu_pct": part("process").get("cpu_pct"),
            "rss_bytes": part("process").get("rss_bytes"), "uptime_s": doc.get("uptime_s"),
            "outbox_depth": part("outbox").get("depth")}


def _dropped(value: Any) -> float | None:
    """The total of an outbox.status `dropped` map; the template formats (or refuses) it."""
    if isinstance(value, dict):
        counts = [v for v in value.values() if isinstance(v, int | float) and not isinstance(v, bool)]
        try:
            return float(sum(counts))
        except OverflowError:
            return None
    return None


def is_fleet_wide_operator(session: Session, user_id: int) -> bool:
    return session.scalar(select(Membership.id).where(
        Membership.user_id == user_id, Membership.role == "operator",
        Membership.vehicle_id.is_(None)).limit(1)) is not None


def user_by_name(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == username)).first()
