"""The systemd notification protocol (sd_notify) over $NOTIFY_SOCKET; sends datagrams (IO).

A no-op when the process was not started by systemd with Type=notify, so callers never check.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Tells systemd about the service's state: READY, STATUS, WATCHDOG, STOPPING, RELOADING."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = _watchdog_usec(env)
        self._sock: socket.socket | None = None
        if self._address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *fields: str) -> bool:
        """Send "KEY=value" lines in one datagram; False if not under systemd or it failed."""
        if self._sock is None or self._address is None:
            return False
        try:
            self._sock.sendto("\n".join(fields).encode(), self._address)
        except OSError as exc:
            # systemd gone (e.g. shutting down) must never take the agent down with it.
            log.debug("sd_notify to %r failed: %s", self._address, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        return self.notify(*_status(text))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *_status(status))

    def reloading(self, status: str | None = None) -> bool:
        # Type=notify-reload (systemd 253+) wants the monotonic time of the reload request.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status(status))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time to start or stop (e.g. a slow first DBC parse on a Pi Zero)."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    def watchdog_interval_s(self) -> float | None:
        """systemd's WatchdogSec for this process, or None when no watchdog is armed.

        Send watchdog() at least every half of this (sd_watchdog_enabled(3) recommends that).
        """
        return None if self._watchdog_usec is None else self._watchdog_usec / 1_000_000

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status(text: str | None) -> tuple[str, ...]:
    # One line only: a newline would start a new (unintended) field.
    return () if text is None else ("STATUS=" + " ".join(text.splitlines()),)


def _socket_address(value: str) -> str | bytes | None:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # Linux abstract namespace
    if value.startswith("/"):
        return value
    return None  # unset, or a vsock: address this agent never runs under


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    # Set for our parent, not us (we are a child that inherited the environment): not ours to feed.
    if pid and pid != str(os.getpid()):
        return None
    return usec if usec > 0 else None
