"""Passwords, login rate limiting, CSRF tokens and the session secret (the limiter and the
shared secret in the database; reads/writes the secret file)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from agent.core.errors import ConfigError
from agent.profile.config import credential
from relay.models import LoginFailure, RelaySetting

log = logging.getLogger(__name__)
MIN_SECRET = 32
SECRET_SETTING = "session_secret"

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
# Verified against when the user does not exist, so timing does not reveal who has an account.
_DUMMY_HASH = _hasher.hash("carfriend-dummy-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class LoginLimiter:
    """Failed logins, in the database, so every relay instance counts the same ones. A
    (username, address) pair is refused after ``attempts`` failures in the window, and an
    address after 4x that (one address spraying many names). An account is never refused: once
    it has ``attempts`` failures from anywhere, each answer for it waits longer (0.5 s doubling
    up to ``max_delay_s``), so a stranger can slow a user's login down but never lock them out.
    Failures older than the window are deleted as new ones come in, so the table stays bounded."""

    def __init__(self, sessions: sessionmaker[Session], attempts: int, window_s: float,
                 max_delay_s: float = 5.0) -> None:
        self.sessions = sessions
        self.attempts = attempts
        self.window = timedelta(seconds=window_s)
        self.max_delay_s = max_delay_s

    def check(self, username: str, address: str, now: datetime) -> tuple[bool, float]:
        """(refused, seconds to wait before answering) for a login attempt."""
        pair, addr, user = self._keys(username, address)
        with self.sessions() as s:
            counts = dict(s.execute(
                select(LoginFailure.key, func.count()).where(
                    LoginFailure.key.in_((pair, addr, user)), LoginFailure.at > now - self.window)
                .group_by(LoginFailure.key)).all())
        refused = (counts.get(pair, 0) >= self.attempts
                   or counts.get(addr, 0) >= 4 * self.attempts)
        excess = counts.get(user, 0) - self.attempts
        delay = 0.0 if excess < 0 else min(self.max_delay_s, 0.5 * 2.0 ** min(excess, 16))
        return refused, delay

    def failed(self, username: str, address: str, now: datetime) -> None:
        with self.sessions() as s, s.begin():
            s.execute(delete(LoginFailure).where(LoginFailure.at <= now - self.window))
            s.execute(insert(LoginFailure), [{"key": k, "at": now}
                                             for k in self._keys(username, address)])

    def succeeded(self, username: str, address: str) -> None:
        pair, _addr, user = self._keys(username, address)
        with self.sessions() as s, s.begin():
            s.execute(delete(LoginFailure).where(LoginFailure.key.in_((pair, user))))

    @staticmethod
    def _keys(username: str, address: str) -> tuple[str, str, str]:
        name = username.lower()
        return tuple(  # type: ignore[return-value]
            hashlib.sha256(k.encode("utf-8", "replace")).hexdigest()
            for k in (f"pair:{name}|{address}", f"addr:{address}", f"user:{name}"))


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(expected: str | None, given: object) -> bool:
    return bool(expected) and isinstance(given, str) and hmac.compare_digest(str(expected), given)


def session_secret(secret_file: Path | None, sessions: sessionmaker[Session]) -> str:
    """The cookie-signing secret every instance shares: the systemd credential `session-secret`,
    else ``[web] secret_file`` when one is set, else one kept in the database (made by whichever
    instance starts first)."""
    if secret_file is not None or credential("session-secret") is not None:
        return load_or_create_secret(secret_file or Path("relay-secret.key"))
    return database_secret(sessions)


def database_secret(sessions: sessionmaker[Session]) -> str:
    with sessions() as s, s.begin():
        dialect: Any = postgresql if s.get_bind().dialect.name == "postgresql" else sqlite
        s.execute(dialect.insert(RelaySetting).values(
            name=SECRET_SETTING, value=secrets.token_urlsafe(48)).on_conflict_do_nothing())
        value = s.scalar(select(RelaySetting.value).where(RelaySetting.name == SECRET_SETTING))
    if value is None or len(value) < MIN_SECRET:
        raise ConfigError(f"relay_settings: {SECRET_SETTING} is missing or shorter than "
                          f"{MIN_SECRET} characters; delete that row to have a new one made")
    return value


def load_or_create_secret(path: Path) -> str:
    """The cookie-signing secret: the systemd credential `session-secret`, else the file, which
    is created (mode 0600) when missing. A short secret is refused, never silently replaced (a
    new one would log everybody out, and hide that the file was tampered with); a file readable
    by others is made private."""
    source = credential("session-secret") or path
    try:
        text = source.read_text().strip()
    except FileNotFoundError:
        return _create_secret(path)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the session secret: {exc.strerror or exc}") \
            from None
    if len(text) < MIN_SECRET:
        raise ConfigError(f"{source}: the session secret is shorter than {MIN_SECRET} "
                          "characters; put a longer one in (or delete the file to have one made)")
    if source == path:
        _make_private(path)
    return text


def _create_secret(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    return secret


def _make_private(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        try:
            os.chmod(path, 0o600)
        except OSError as exc:
            raise ConfigError(f"{path}: the session secret has mode {mode:04o} and cannot be made "
                              f"private (0600): {exc.strerror or exc}") from None
        log.warning("%s: the session secret had mode %04o; now 0600", path, mode)
