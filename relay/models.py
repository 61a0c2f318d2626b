"""Database tables of the relay (SQLAlchemy 2 declarative; no IO at import)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ROLES = ("owner", "family", "dealer", "operator")

# Named constraints so Alembic migrations work the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Naive UTC: every timestamp in the database is UTC without a zone (SQLite keeps none)."""
    return datetime.now(UTC).replace(tzinfo=None)


# 64-bit row numbers on PostgreSQL (a 32-bit serial runs out in about 67 days at 100,000 cars);
# on SQLite an INTEGER PRIMARY KEY is already 64-bit, and only that spelling is its rowid.
RowId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON}


class Vehicle(Base):
    __tablename__ = "vehicles"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    public_feed: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    status_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_seen: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    state: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    state_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # Event time of the newest state_history row (at most one per state_history_min_interval_s).
    history_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    fleet: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    fleet_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # The agent's latest `health` document (docs/topics.md) and when the relay stored it.
    health: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    health_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # Bumped on every change of status/state/fleet, so live pages know what to refresh.
    revision: Mapped[int] = mapped_column(Integer, default=0)
    # The last Message.vseq given to this vehicle's messages (assigned under this row's lock).
    msg_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(100), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # Bumped on password change: older session cookies stop working.
    session_version: Mapped[int] = mapped_column(Integer, default=1)


class WebSession(Base):
    """A logged-in browser: the cookie carries a random token, the table its SHA-256, so logging
    out (or a password change) ends the session on the server and a copied cookie stops working."""

    __tablename__ = "web_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of the token
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class Membership(Base):
    """A user's role for one vehicle; vehicle_id NULL means every vehicle (operators only)."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "vehicle_id", "role"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    vehicle_id: Mapped[str | None] = mapped_column(
        ForeignKey("vehicles.id", ondelete="CASCADE"), nullable=True, index=True)
    role: Mapped[str] = mapped_column(String(16))


class Message(Base):
    """A message from a car. ``vseq`` numbers a vehicle's messages in commit order: it is taken
    from ``vehicles.msg_seq`` while the ingest holds that vehicle's row lock, so a live page's
    cursor never passes a message that another relay instance commits later (``seq`` is handed
    out at insert and may become visible out of order)."""

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("vehicle_id", "msg_id"),
        UniqueConstraint("vehicle_id", "vseq"),
        # The pages' queries: the latest charge.started (ETA), alerts, family/public timelines,
        # alerts of the last 24 h on the fleet page, and retention.
        Index("ix_messages_vehicle_kind_vseq", "vehicle_id", "kind", "vseq"),
        Index("ix_messages_vehicle_severity_vseq", "vehicle_id", "severity", "vseq"),
        Index("ix_messages_vehicle_visibility_vseq", "vehicle_id", "visibility", "vseq"),
        Index("ix_messages_received_at", "received_at"),
    )
    seq: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id", ondelete="CASCADE"))
    vseq: Mapped[int] = mapped_column(BigInteger)
    msg_id: Mapped[str] = mapped_column(String(64))
    ts: Mapped[datetime] = mapped_column(DateTime)
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    visibility: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    locale: Mapped[str] = mapped_column(String(16), default="en")
    persona: Mapped[str] = mapped_column(String(64), default="")
    question: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class StateRecord(Base):
    __tablename__ = "state_history"
    __table_args__ = (Index("ix_state_history_vehicle_ts", "vehicle_id", "ts"),
                      Index("ix_state_history_ts", "ts"))
    seq: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id", ondelete="CASCADE"))
    ts: Mapped[datetime] = mapped_column(DateTime)
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    signals: Mapped[dict[str, Any]] = mapped_column(JSON)


class Command(Base):
    """A command the relay signed and sent; status follows the car's results."""

    __tablename__ = "commands"
    __table_args__ = (Index("ix_commands_vehicle_issued_at", "vehicle_id", "issued_at"),
                      Index("ix_commands_issued_at", "issued_at"))
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    issued_at: Mapped[datetime] = mapped_column(DateTime)
    issued_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    message_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="sent")
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class CommandResult(Base):
    __tablename__ = "command_results"
    __table_args__ = (
        UniqueConstraint("vehicle_id", "command_id", "status"),
        Index("ix_command_results_vehicle_seq", "vehicle_id", "seq"),
        Index("ix_command_results_received_at", "received_at"),
    )
    seq: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id", ondelete="CASCADE"))
    command_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    ts: Mapped[datetime] = mapped_column(DateTime)
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Appointment(Base):
    __tablename__ = "appointments"
    __table_args__ = (UniqueConstraint("vehicle_id", "dedup_key"),
                      Index("ix_appointments_received_at", "received_at"))
    seq: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id", ondelete="CASCADE"), index=True)
    dedup_key: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    service_type: Mapped[str] = mapped_column(String(100), default="")
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)


class FleetReport(Base):
    __tablename__ = "fleet_reports"
    __table_args__ = (Index("ix_fleet_reports_vehicle_seq", "vehicle_id", "seq"),
                      Index("ix_fleet_reports_received_at", "received_at"),
                      UniqueConstraint("vehicle_id", "dedup_key"))
    seq: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id", ondelete="CASCADE"))
    # The report's id, else a digest of its content: stored once however many instances get it.
    dedup_key: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)


class Purge(Base):
    """A purge of a car's history: when, by whom, how many rows of each table went. Kept (a
    purge never deletes these), and part of the owner's export."""

    __tablename__ = "purges"
    seq: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id", ondelete="CASCADE"),
                                            index=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    by: Mapped[str] = mapped_column(String(64))  # the user name, or "cli:<login>"
    deleted: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class LoginFailure(Base):
    """A failed login, shared by every relay instance (the rate limit of relay.auth). ``key`` is
    the SHA-256 of "pair:<user>|<address>", "addr:<address>" or "user:<user>": the table holds
    neither names nor addresses."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_key_at", "key", "at"),
                      Index("ix_login_failures_at", "at"))
    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime)


class RelaySetting(Base):
    """Values every relay instance must agree on (the cookie-signing secret when it is neither a
    systemd credential nor a file), created once by whichever instance starts first."""

    __tablename__ = "relay_settings"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


# -- notifications (relay/notify/) ------------------------------------------------------------

class PushSubscription(Base):
    """A browser's Web Push subscription (RFC 8030): where to post, and its keys (RFC 8291)."""

    __tablename__ = "push_subscriptions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    endpoint: Mapped[str] = mapped_column(String(1000), unique=True)
    p256dh: Mapped[str] = mapped_column(String(200))
    auth: Mapped[str] = mapped_column(String(100))
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class NotifyChannel(Base):
    """An Apprise URL a user added: kept encrypted (Fernet), shown only as its masked label."""

    __tablename__ = "notify_channels"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    scheme: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(200))
    secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class NotifyMute(Base):
    """A user does not want notifications of one vehicle (vehicle_id NULL: of any vehicle)."""

    __tablename__ = "notify_mutes"
    __table_args__ = (UniqueConstraint("user_id", "vehicle_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    vehicle_id: Mapped[str | None] = mapped_column(
        ForeignKey("vehicles.id", ondelete="CASCADE"), nullable=True)


class Notification(Base):
    """The notification outbox: one row per (message, user, target), delivered at least once."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("vehicle_id", "msg_id", "user_id", "target"),
        Index("ix_notifications_due", "status", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id", ondelete="CASCADE"))
    msg_id: Mapped[str] = mapped_column(String(64))
    message_seq: Mapped[int] = mapped_column(BigInteger, ForeignKey("messages.seq",
                                                                    ondelete="CASCADE"),
                                             index=True)
    target: Mapped[str] = mapped_column(String(40))  # "push:<id>" or "channel:<id>"
    channel: Mapped[str] = mapped_column(String(32))  # "webpush" or the Apprise scheme
    status: Mapped[str] = mapped_column(String(16), default="pending")  # sent failed gone
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(40), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(300), nullable=True)


class NotifyCursor(Base):
    """How far the fan-out has read the messages table (one row, id 1)."""

    __tablename__ = "notify_cursor"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)  # a messages.seq
