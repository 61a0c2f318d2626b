"""Frame sources at the edge: python-can buses and log files -> (ts, can_id, data) tuples (IO)."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import can

from agent.core.errors import SourceError
from agent.core.settings import CanConfig

log = logging.getLogger(__name__)

# A frame as the core sees it: event time (s), arbitration id, payload. None as the id marks an
# error frame (counted, never decoded).
Frame = tuple[float, int | None, bytes]

LOG_SUFFIXES = (".log", ".asc", ".blf", ".trc", ".csv")


def read_log(path: Path, start_time: datetime | None = None) -> Iterator[Frame]:
    """Frames of a recorded log, in file order.

    GVRET/SavvyCAN CSV (which python-can cannot read) is parsed here; everything else through
    python-can's LogReader. ``start_time`` re-anchors relative timestamps at an absolute time.
    """
    if not path.exists():
        raise SourceError(f"{path}: no such log file")
    frames = _read_gvret(path) if path.suffix.lower() == ".csv" else _read_python_can(path)
    if start_time is None:
        yield from frames
        return
    first: float | None = None
    anchor = start_time.timestamp()
    for ts, can_id, data in frames:
        if first is None:
            first = ts
        yield anchor + (ts - first), can_id, data


def _read_python_can(path: Path) -> Iterator[Frame]:
    try:
        reader = can.LogReader(str(path))
    except (ValueError, OSError) as exc:
        raise SourceError(f"{path}: cannot read log: {exc}") from None
    try:
        for msg in reader:
            yield from _from_message(msg)
    except (ValueError, OSError, EOFError) as exc:
        raise SourceError(f"{path}: unreadable log: {exc}") from None
    finally:
        stop = getattr(reader, "stop", None)
        if stop:
            stop()


def _from_message(msg: can.Message) -> Iterator[Frame]:
    """The one place a can.Message becomes the core's frame."""
    if msg.is_error_frame:
        yield msg.timestamp, None, b""
    elif not msg.is_remote_frame:
        yield msg.timestamp, msg.arbitration_id, bytes(msg.data)


def _read_gvret(path: Path) -> Iterator[Frame]:
    """SavvyCAN/GVRET CSV: Time Stamp (us), ID (hex), Extended, [Dir,] Bus, LEN, D1..D8."""
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        rows = csv.reader(fh)
        header = next(rows, None)
        if not header or "Time Stamp" not in header[0]:
            raise SourceError(f"{path}: not a GVRET/SavvyCAN CSV (first column must be 'Time Stamp')")
        cols = {name.strip(): i for i, name in enumerate(header)}
        try:
            i_ts, i_id, i_len = cols["Time Stamp"], cols["ID"], cols["LEN"]
        except KeyError as exc:
            raise SourceError(f"{path}: CSV header lacks column {exc}") from None
        i_d1 = cols.get("D1", i_len + 1)
        last_ts = 0.0
        for line, row in enumerate(rows, start=2):
            try:
                n = int(row[i_len])
                data = bytes(int(b, 16) for b in row[i_d1:i_d1 + n])
                last_ts = int(row[i_ts]) / 1e6
                yield last_ts, int(row[i_id], 16), data
            except (ValueError, IndexError):
                log.debug("%s:%d: unreadable row", path, line)
                yield last_ts, None, b""  # counted like an error frame: never silently lost


def open_bus(cfg: CanConfig, filters: list[dict[str, Any]] | None) -> can.BusABC:
    """Open the configured python-can interface; filters go to the kernel/adapter where supported."""
    kwargs: dict[str, Any] = dict(cfg.options)
    if cfg.bitrate is not None:
        kwargs["bitrate"] = cfg.bitrate
    if cfg.interface == "slcan" and kwargs.pop("reader", None) == "chunked":
        return _open_chunked_slcan(cfg, filters, kwargs)
    if cfg.interface == "virtual":
        kwargs.setdefault("preserve_timestamps", True)  # a simulator's event time passes through
    try:
        bus = can.Bus(interface=cfg.interface, channel=cfg.channel, can_filters=filters, **kwargs)
    except (can.CanError, OSError, ValueError, ImportError, NotImplementedError) as exc:
        raise SourceError(f"[can] {cfg.interface} {cfg.channel}: cannot open bus: {exc}") from None
    _no_software_filters(bus)
    return _guarded(cfg, bus)


def _guarded(cfg: CanConfig, bus: can.BusABC) -> can.BusABC:
    if not cfg.listen_only:
        return bus
    from agent.io.guarded_bus import ListenOnlyBus

    return ListenOnlyBus(bus)


def _no_software_filters(bus: can.BusABC) -> None:
    """Keep filters only where the kernel or adapter applies them (SocketCAN, most USB adapters).

    Where python-can would filter in Python instead (virtual, slcan), the decoder's dict lookup
    drops an unmapped id more cheaply, and recv(0) then returns None only when the queue is
    empty, which the batched receive loop relies on (python-can's recv(0) also returns None
    right after a frame its software filter dropped). A bus filters in software when its class
    does not override ``_apply_filters``, or (SocketCAN) when applying kernel filters failed,
    which python-can records in the private ``_is_filtered`` flag; python-can is pinned below 5.
    """
    software = type(bus)._apply_filters is can.BusABC._apply_filters or getattr(bus, "_is_filtered", None) is False
    if bus.filters and software:
        bus.set_filters(None)


def _open_chunked_slcan(cfg: CanConfig, filters: list[dict[str, Any]] | None, kwargs: dict[str, Any]) -> can.BusABC:
    """`options = { reader = "chunked" }`: agent.slcan reads the adapter in chunks, not bytes."""
    from agent.io.slcan import ChunkedSlcanBus

    kwargs.pop("sleep_after_open", None)
    try:
        bus = ChunkedSlcanBus(channel=cfg.channel or "", can_filters=filters, **kwargs)
    except (can.CanError, OSError, ValueError, TypeError) as exc:
        raise SourceError(f"[can] slcan {cfg.channel}: cannot open bus: {exc}") from None
    _no_software_filters(bus)
    return _guarded(cfg, bus)
