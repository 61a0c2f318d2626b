"""Fan-out: each new message becomes outbox rows, one per (user who may read it, their channel),
in the same transaction that moves the cursor (does IO through a Session).

It reads the messages table after the ingest has committed, so the ingest never waits for it
and a failure here can never drop a message. The cursor (``notify_cursor``) and the outbox rows
commit together: a relay killed between the ingest and the fan-out fans out on restart, and the
unique (message, user, target) key makes a repeat harmless. Who gets what follows the page's
rules (relay/permissions.py): owners every message, family only family/public ones, operators
and dealers none (they have the fleet page and the metrics); a muted user or vehicle none.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from relay.models import (
    Membership,
    Message,
    Notification,
    NotifyChannel,
    NotifyCursor,
    NotifyMute,
    PushSubscription,
)
from relay.permissions import Access

BATCH = 500
# PostgreSQL hands out sequence numbers before commit, so a message may become visible after
# one with a higher seq: numbers skipped by the cursor are looked at again for this long.
GAP_RECHECK_S = 60.0


@dataclass
class Fanout:
    max_age: timedelta
    gaps: dict[int, float] = field(default_factory=dict)  # seq -> monotonic time first missed

    def run(self, session: Session, now: datetime) -> int:
        """One pass (the caller commits): outbox rows for messages past the cursor (and in
        recent gaps); returns how many rows were added."""
        cursor = session.scalar(select(NotifyCursor.seq).where(NotifyCursor.id == 1))
        if cursor is None:  # the migration made it; a database restored without it
            session.add(NotifyCursor(id=1, seq=0))
            cursor = 0
        msgs = list(session.scalars(select(Message).where(Message.seq > cursor)
                                    .order_by(Message.seq).limit(BATCH)))
        if msgs:
            self._note_gaps(cursor, [m.seq for m in msgs])
            # Never backwards (another relay instance may have moved it further).
            session.execute(update(NotifyCursor).where(NotifyCursor.id == 1,
                                                       NotifyCursor.seq < msgs[-1].seq)
                            .values(seq=msgs[-1].seq))
        msgs += self._gap_messages(session, exclude={m.seq for m in msgs})
        fresh = [m for m in msgs if now - m.ts <= self.max_age]
        rows = outbox_rows(session, fresh, now)
        _insert_ignore(session, rows)
        return len(rows)

    def _gap_messages(self, session: Session, exclude: set[int]) -> list[Message]:
        deadline = time.monotonic() - GAP_RECHECK_S
        for seq in [s for s, t in self.gaps.items() if t < deadline]:
            del self.gaps[seq]
        if not self.gaps:
            return []
        wanted = [s for s in self.gaps if s not in exclude]
        found = list(session.scalars(select(Message).where(Message.seq.in_(wanted))))
        for m in found:
            self.gaps.pop(m.seq, None)
        return found

    def _note_gaps(self, cursor: int, seqs: list[int]) -> None:
        present = set(seqs)
        top = max(seqs)
        missing = [s for s in range(cursor + 1, top) if s not in present]
        started = time.monotonic()
        for seq in missing[:1000]:
            self.gaps.setdefault(seq, started)


def outbox_rows(session: Session, msgs: list[Message], now: datetime) -> list[dict[str, Any]]:
    """The rows for these messages: per message, every user whose role lets them read it and
    who has not muted it, times each of their push subscriptions and channels."""
    if not msgs:
        return []
    vids = {m.vehicle_id for m in msgs}
    roles: dict[tuple[int, str], set[str]] = {}
    for uid, vid, role in session.execute(select(Membership.user_id, Membership.vehicle_id,
                                                 Membership.role).where(
            Membership.vehicle_id.in_(vids), Membership.role.in_(("owner", "family")))):
        roles.setdefault((uid, str(vid)), set()).add(role)
    users = {uid for uid, _vid in roles}
    targets = _targets(session, users)
    muted = {(uid, vid) for uid, vid in session.execute(
        select(NotifyMute.user_id, NotifyMute.vehicle_id).where(NotifyMute.user_id.in_(users)))}
    rows = []
    for m in msgs:
        for (uid, vid), user_roles in roles.items():
            if vid != m.vehicle_id or (uid, None) in muted or (uid, vid) in muted:
                continue
            if m.visibility not in Access(frozenset(user_roles)).visibilities:
                continue
            rows += [dict(user_id=uid, vehicle_id=vid, msg_id=m.msg_id, message_seq=m.seq,
                          target=target, channel=channel, status="pending", attempts=0,
                          next_attempt_at=now, created_at=now)
                     for target, channel in targets.get(uid, ())]
    return rows


def _targets(session: Session, users: Iterable[int]) -> dict[int, list[tuple[str, str]]]:
    users = list(users)
    out: dict[int, list[tuple[str, str]]] = {}
    for sid, uid in session.execute(select(PushSubscription.id, PushSubscription.user_id)
                                    .where(PushSubscription.user_id.in_(users))):
        out.setdefault(uid, []).append((f"push:{sid}", "webpush"))
    for cid, uid, scheme in session.execute(select(NotifyChannel.id, NotifyChannel.user_id,
                                                   NotifyChannel.scheme)
                                            .where(NotifyChannel.user_id.in_(users))):
        out.setdefault(uid, []).append((f"channel:{cid}", scheme))
    return out


def _insert_ignore(session: Session, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    dialect: Any = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.execute(dialect.insert(Notification).on_conflict_do_nothing(), rows)


def muted_vehicles(session: Session, user_id: int) -> set[str | None]:
    """The vehicles a user muted (None in the set: everything)."""
    return set(session.scalars(select(NotifyMute.vehicle_id).where(NotifyMute.user_id == user_id)))


def set_mute(session: Session, user_id: int, vehicle_id: str | None, muted: bool) -> None:
    query = NotifyMute.vehicle_id.is_(None) if vehicle_id is None else \
        NotifyMute.vehicle_id == vehicle_id
    existing = session.scalars(select(NotifyMute).where(NotifyMute.user_id == user_id, query)).first()
    if muted and existing is None:
        session.add(NotifyMute(user_id=user_id, vehicle_id=vehicle_id))
    elif not muted and existing is not None:
        session.delete(existing)



