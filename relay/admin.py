"""Administration from the command line: vehicles, users, roles, passwords (does IO)."""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import sys

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from agent.core.errors import CarfriendError
from relay.auth import hash_password
from relay.config import RelayConfig
from relay.db import make_engine, make_sessionmaker, migrate
from relay.models import ROLES, Membership, User, Vehicle, WebSession
from relay.signing import VEHICLE_ID, key_path

MIN_PASSWORD = 8


class AdminError(CarfriendError):
    """A relay administration request that cannot be done (unknown user, bad role...)."""


def open_db(config: RelayConfig) -> Session:
    return open_sessions(config)()


def open_sessions(config: RelayConfig) -> sessionmaker[Session]:
    """Sessions on the relay's database, its schema brought up to date first."""
    engine = make_engine(config.database.url, timeout_s=config.database.timeout_s)
    migrate(engine)
    return make_sessionmaker(engine)


def add_vehicles(s: Session, config: RelayConfig, ids: list[str], name: str = "",
                 public_feed: bool = False, generate_key: bool = False) -> list[str]:
    """Register vehicles (existing ones are updated); returns a line per vehicle for the user."""
    out = []
    for vid in ids:
        if not VEHICLE_ID.match(vid):
            raise AdminError(f"invalid vehicle id {vid!r}: letters, digits, '_', '.', '-', max 64")
        vehicle = s.get(Vehicle, vid) or Vehicle(id=vid, revision=0)
        vehicle.name = name or vehicle.name or ""
        vehicle.public_feed = public_feed
        s.add(vehicle)
        path = key_path(config.keys.dir, vid)
        if generate_key and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
            out.append(f"{vid}: key written to {path} (copy it to the car)")
        else:
            out.append(f"{vid}: " + ("key " + str(path) if path.exists() else
                                     f"no key yet: commands need {path}"))
    s.commit()
    return out


def add_user(s: Session, username: str, password: str, display_name: str = "") -> User:
    if not 1 <= len(username) <= 64 or not username.isprintable() or " " in username:
        raise AdminError(f"invalid username {username[:64]!r}")
    if len(password) < MIN_PASSWORD:
        raise AdminError(f"the password must have at least {MIN_PASSWORD} characters")
    user = User(username=username, display_name=display_name, password_hash=hash_password(password))
    s.add(user)
    try:
        s.commit()
    except IntegrityError:
        s.rollback()
        raise AdminError(f"user {username!r} already exists") from None
    return user


def grant(s: Session, username: str, role: str, vehicle_id: str | None) -> None:
    user = _user(s, username)
    if role not in ROLES:
        raise AdminError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    if vehicle_id is None and role != "operator":
        raise AdminError("only the operator role can cover every vehicle")
    if vehicle_id is not None and s.get(Vehicle, vehicle_id) is None:
        raise AdminError(f"unknown vehicle {vehicle_id!r}: add it with add-vehicle first")
    exists = s.scalars(select(Membership).where(
        Membership.user_id == user.id, Membership.role == role,
        Membership.vehicle_id.is_(None) if vehicle_id is None
        else Membership.vehicle_id == vehicle_id)).first()
    if exists is None:
        s.add(Membership(user_id=user.id, vehicle_id=vehicle_id, role=role))
        s.commit()


def revoke(s: Session, username: str, role: str, vehicle_id: str | None) -> None:
    user = _user(s, username)
    s.execute(delete(Membership).where(
        Membership.user_id == user.id, Membership.role == role,
        Membership.vehicle_id.is_(None) if vehicle_id is None
        else Membership.vehicle_id == vehicle_id))
    s.commit()


def set_password(s: Session, username: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AdminError(f"the password must have at least {MIN_PASSWORD} characters")
    user = _user(s, username)
    user.password_hash = hash_password(password)
    user.session_version += 1
    s.execute(delete(WebSession).where(WebSession.user_id == user.id))  # logs out every session
    s.commit()


def listing(s: Session) -> list[str]:
    lines = [f"vehicle {v.id} {v.name!r} status={v.status or '-'}"
             for v in s.scalars(select(Vehicle).order_by(Vehicle.id))]
    for u in s.scalars(select(User).order_by(User.username)):
        roles = s.execute(select(Membership.role, Membership.vehicle_id)
                          .where(Membership.user_id == u.id)).all()
        text = ", ".join(f"{r}@{v or '*'}" for r, v in roles) or "no roles"
        lines.append(f"user {u.username}: {text}")
    return lines


def _user(s: Session, username: str) -> User:
    user = s.scalars(select(User).where(User.username == username)).first()
    if user is None:
        raise AdminError(f"unknown user {username!r}")
    return user


def read_password(args: argparse.Namespace) -> str:
    """From --password-stdin (first line), else an interactive prompt asked twice."""
    if args.password_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise AdminError("the passwords differ")
    return first
