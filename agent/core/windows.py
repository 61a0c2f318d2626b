"""Daily time windows ("22:00-07:00", wrapping midnight): quiet hours, off-peak charging (no IO)."""

from __future__ import annotations

from datetime import time as dtime


def parse_window(text: str) -> tuple[dtime, dtime]:
    a, b = text.split("-")
    return dtime.fromisoformat(a), dtime.fromisoformat(b)


def in_window(t: dtime, window: tuple[dtime, dtime]) -> bool:
    start, end = window
    return start <= t < end if start < end else (t >= start or t < end)
