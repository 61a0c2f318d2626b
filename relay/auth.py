"""Passwords, login rate limiting, CSRF tokens and the session secret (reads/writes the secret file only)."""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from agent.core.errors import ConfigError
from agent.profile.config import credential

log = logging.getLogger(__name__)
MIN_SECRET = 32

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
    """Failed logins, in memory. A (username, address) pair is refused after ``attempts``
    failures in the window, and an address after 4x that (one address spraying many names). An
    account is never refused: once it has ``attempts`` failures from anywhere, each answer for
    it waits longer (0.5 s doubling up to ``max_delay_s``), so a stranger can slow a user's
    login down but never lock them out. The table holds at most ``max_keys`` entries: beyond,
    expired and then least recently failed unblocked entries are forgotten, never all at once."""

    def __init__(self, attempts: int, window_s: float, max_delay_s: float = 5.0,
                 max_keys: int = 100_000) -> None:
        self.attempts = attempts
        self.window_s = window_s
        self.max_delay_s = max_delay_s
        self.max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, username: str, address: str, now: float | None = None) -> tuple[bool, float]:
        """(refused, seconds to wait before answering) for a login attempt."""
        now = time.monotonic() if now is None else now
        pair, addr, user = self._keys(username, address)
        with self._lock:
            refused = (self._count(pair, now) >= self.attempts
                       or self._count(addr, now) >= 4 * self.attempts)
            excess = self._count(user, now) - self.attempts
        delay = 0.0 if excess < 0 else min(self.max_delay_s, 0.5 * 2.0 ** min(excess, 16))
        return refused, delay

    def failed(self, username: str, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            for key in self._keys(username, address):
                recent = self._failures.pop(key, None) or deque()
                self._prune(recent, now)
                recent.append(now)
                self._failures[key] = recent  # now the most recently failed
            self._shrink(now)

    def succeeded(self, username: str, address: str) -> None:
        pair, _addr, user = self._keys(username, address)
        with self._lock:
            self._failures.pop(pair, None)
            self._failures.pop(user, None)

    @staticmethod
    def _keys(username: str, address: str) -> tuple[str, str, str]:
        name = username.lower()
        return f"pair:{name}|{address}", f"addr:{address}", f"user:{name}"

    def _count(self, key: str, now: float) -> int:
        recent = self._failures.get(key)
        if recent is None:
            return 0
        self._prune(recent, now)
        return len(recent)

    def _prune(self, recent: deque[float], now: float) -> None:
        while recent and now - recent[0] > self.window_s:
            recent.popleft()

    def _shrink(self, now: float) -> None:
        """Bounded memory: forget the oldest entries that block nothing (a blocked one met on
        the way is moved to the back, so it is not scanned again soon)."""
        scanned = 0
        while len(self._failures) > self.max_keys and scanned < 2 * self.max_keys:
            key, recent = next(iter(self._failures.items()))
            self._prune(recent, now)
            if len(recent) >= self.attempts:
                self._failures.move_to_end(key)
            else:
                del self._failures[key]
            scanned += 1


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_ok(expected: str | None, given: object) -> bool:
    return bool(expected) and isinstance(given, str) and hmac.compare_digest(str(expected), given)


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
