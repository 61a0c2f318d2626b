"""Wake live pages when the ingest worker commits something for a vehicle (thread -> asyncio)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable

ALL = "*"  # waiters on every vehicle (the fleet page)


class Hub:
    """Any thread calls notify(); asyncio tasks wait on the events they registered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._listeners: list[Callable[[Iterable[str]], None]] = []

    def add_listener(self, listener: Callable[[Iterable[str]], None]) -> None:
        """A thread-side listener (the notification worker): called on every notify()."""
        self._listeners.append(listener)

    def register(self, key: str) -> tuple[asyncio.AbstractEventLoop, asyncio.Event]:
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.setdefault(key, set()).add(waiter)
        return waiter

    def unregister(self, key: str, waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[key]

    def notify(self, vehicle_ids: Iterable[str]) -> None:
        for listener in self._listeners:
            listener(vehicle_ids)
        with self._lock:
            targets = [w for key in (*vehicle_ids, ALL) for w in self._waiters.get(key, ())]
        for loop, event in targets:
            with contextlib.suppress(RuntimeError):  # that page's loop has closed
                loop.call_soon_threadsafe(event.set)

    def open_count(self) -> int:
        """Waiters registered now: the live streams open."""
        with self._lock:
            return sum(len(w) for w in self._waiters.values())

    def wake_all(self) -> None:
        """Wake every waiter (shutdown: live streams see the stop flag and end)."""
        with self._lock:
            keys = list(self._waiters)
        self.notify(keys)
