"""Frame sources at the edge: python-can buses and log files -> (ts, can_id, data) tuples (IO)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import can

from agent.core.errors import SourceError
from agent.core.settings import CanConfig
from agent.io.logs import Frame, LogReport, read_frames

log = logging.getLogger(__name__)

LOG_SUFFIXES = (".log", ".asc", ".blf", ".trc", ".csv")

SYS_CLASS_NET = Path("/sys/class/net")
IFF_UP = 0x1  # <linux/if.h>: the link is administratively up


def read_log(path: Path, start_time: datetime | None = None, report: LogReport | None = None) -> Iterator[Frame]:
    """Frames of a recorded log, in file order (agent.io.logs reads each format).

    A malformed line is counted in ``report`` and skipped. ``start_time`` re-anchors relative
    timestamps at an absolute time.
    """
    report = report if report is not None else LogReport(path)
    report.anchored = start_time is not None
    frames = read_frames(path, report)
    if start_time is None:
        yield from frames
        return
    first: float | None = None
    anchor = start_time.timestamp()
    for ts, can_id, data in frames:
        if first is None:
            first = ts
        yield anchor + (ts - first), can_id, data


def open_bus(cfg: CanConfig, filters: list[dict[str, Any]] | None) -> can.BusABC:
    """Open the configured python-can interface; filters go to the kernel/adapter where supported."""
    kwargs: dict[str, Any] = dict(cfg.options)
    if cfg.bitrate is not None:
        kwargs["bitrate"] = cfg.bitrate
    if cfg.fd:
        kwargs["fd"] = True
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


def link_is_up(channel: str, sys_class_net: Path = SYS_CLASS_NET) -> bool | None:
    """Whether the network interface `channel` (a SocketCAN link) is up (IFF_UP in its flags).

    None when there is no such interface. Opening a SocketCAN socket succeeds on a link that is
    down (its first recv() then fails with ENETDOWN), so an open bus says nothing about this;
    a can0 without a bitrate stays down, because the kernel refuses to bring it up.
    """
    if not channel or "/" in channel or channel in (".", ".."):
        return None
    try:
        flags = int((sys_class_net / channel / "flags").read_text().strip(), 16)
    except (OSError, ValueError):
        return None
    return bool(flags & IFF_UP)
