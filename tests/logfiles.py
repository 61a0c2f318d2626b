"""Test helpers: write the same frames as a candump, ASC, TRC, GVRET CSV or BLF log (real files)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import can
from can.io.asc import ASC_MESSAGE_REGEX

FORMATS = (".log", ".asc", ".trc", ".csv", ".blf")
TEXT_FORMATS = (".log", ".asc", ".trc", ".csv")

Frame = tuple[float, int, bytes]


def write(path: Path, frames: Iterable[Frame], *, fd: bool = False) -> Path:
    """The frames as a log of path's format (the suffix); FD frames with BRS when fd is set."""
    suffix = path.suffix
    if suffix == ".log":
        with path.open("w") as fh:
            for ts, fid, data in frames:
                ident = f"{fid:08X}" if fid > 0x7FF else f"{fid:03X}"
                sep = "##1" if fd else "#"
                fh.write(f"({ts:.6f}) can0 {ident}{sep}{data.hex().upper()}\n")
    elif suffix == ".csv":
        with path.open("w") as fh:
            fh.write("Time Stamp,ID,Extended,Dir,Bus,LEN,D1,D2,D3,D4,D5,D6,D7,D8\n")
            for ts, fid, data in frames:
                cells = ",".join(f"{b:02X}" for b in data)
                fh.write(f"{round(ts * 1e6)},{fid:08X},{'true' if fid > 0x7FF else 'false'},Rx,0,{len(data)},{cells}\n")
    else:
        with can.Logger(str(path)) as writer:
            for ts, fid, data in frames:
                writer.on_message_received(can.Message(timestamp=ts, arbitration_id=fid, data=data,
                                                       is_extended_id=fid > 0x7FF, is_fd=fd,
                                                       bitrate_switch=fd, channel=0))
    return path


_TRC_FRAME = re.compile(r"\s*\d+\s+\d")


def frame_lines(path: Path) -> list[int]:
    """Indexes of the lines of a text log that each hold one frame, in order."""
    lines = path.read_text().splitlines()
    if path.suffix == ".log":
        return list(range(len(lines)))
    if path.suffix == ".csv":
        return list(range(1, len(lines)))
    if path.suffix == ".asc":
        return [i for i, line in enumerate(lines)
                if ASC_MESSAGE_REGEX.match(line.strip()) and "Start of measurement" not in line]
    return [i for i, line in enumerate(lines) if not line.startswith(";") and _TRC_FRAME.match(line)]
