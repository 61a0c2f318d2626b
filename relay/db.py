"""Database engine, sessions and schema migrations (Alembic) for the relay (does IO)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

# Alembic logs a line per plugin when it is imported: keep start-up output to what matters.
logging.getLogger("alembic").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.config import Config as AlembicConfig  # noqa: E402
from sqlalchemy import create_engine, event  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str, echo: bool = False, timeout_s: float = 30.0) -> Engine:
    """An engine; SQLite gets WAL, full fsync on commit and enforced foreign keys. timeout_s:
    SQLite's wait for another writer's lock, PostgreSQL's connection timeout."""
    if url.startswith("sqlite"):
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False,
                                                             "timeout": timeout_s})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # (The ingest sets synchronous_commit in its own transactions: relay/mqtt.py.)
    args = {"connect_timeout": max(1, round(timeout_s))} if "+psycopg" in url else {}
    return create_engine(url, echo=echo, pool_pre_ping=True, connect_args=args)


def unavailable(exc: BaseException) -> bool:
    """Whether a database error means "the database is away" (down, restarting, unreachable,
    locked by another process, read-only, out of disk), so the work must wait and be retried,
    rather than "this row cannot be stored" (which retrying would never fix)."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def describe(exc: BaseException) -> str:
    """One line about a database error for the log (the driver's message, not the SQL)."""
    orig = getattr(exc, "orig", None) or exc
    return " ".join(str(orig).split())[:300] or type(orig).__name__


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before the MQTT acknowledgement that depends on it.
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent; run at every start)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
