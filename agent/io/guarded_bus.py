"""`[can] listen_only = true` at the bus layer: a python-can bus whose send always raises (IO).

Whatever asks to transmit (a diagnostic poll, a flow control, a remote command) meets the same
wall, so a passive agent is passive by construction, not because every caller remembers a flag.
"""

from __future__ import annotations

from typing import Any

import can

LISTEN_ONLY_REASON = "listen-only: [can] listen_only = true forbids every transmission"


class TransmitForbidden(can.CanOperationError):
    """A send on a listen-only bus."""


class ListenOnlyBus(can.BusABC):
    """Wraps a bus: receiving, filters and shutdown go to it; send raises TransmitForbidden."""

    def __init__(self, bus: can.BusABC) -> None:
        self.inner = bus
        self.refused = 0  # sends refused, for the counters
        super().__init__(channel=getattr(bus, "channel_info", "listen-only"))

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        self.refused += 1
        raise TransmitForbidden(LISTEN_ONLY_REASON)

    def recv(self, timeout: float | None = None) -> can.Message | None:
        return self.inner.recv(timeout)

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        return self.inner.recv(timeout), True

    def set_filters(self, filters: Any = None) -> None:
        self.inner.set_filters(filters)

    @property
    def filters(self) -> Any:
        return self.inner.filters

    @filters.setter
    def filters(self, value: Any) -> None:
        self.inner.set_filters(value)

    def fileno(self) -> int:
        return self.inner.fileno()

    def shutdown(self) -> None:
        self.inner.shutdown()
        super().shutdown()
