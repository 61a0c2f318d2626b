"""Recorded CAN logs -> the core's frames, read one line at a time, bad lines counted (reads files).

candump ``-l`` (classic and CAN FD ``##``), Vector ASC (incl. ``CANFD`` records), PCAN TRC, BLF
and SavvyCAN/GVRET CSV. A line that cannot be read is a bad frame: it is counted in
``LogReport.malformed_lines`` (with the first few line numbers and why) and skipped, and reading
goes on. The usual case is a log whose last line was cut when the car's power went off.
python-can's readers end on the first bad line, so the text formats are read line by line
here; ASC and TRC rows are still parsed by python-can's own row parsers.
"""

from __future__ import annotations

import contextlib
import math
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, Any, NamedTuple, TextIO

import can
from can.io.asc import ASC_MESSAGE_REGEX
from can.io.blf import BLFParseError
from can.util import CAN_FD_DLC, dlc2len

from agent.core.errors import SourceError

# A frame as the core sees it: event time (s), arbitration id, payload. None as the id marks an
# error frame (counted, never decoded).
Frame = tuple[float, int | None, bytes]

# A first timestamp before 2000-01-01 is not a date: the log counts from the logger's start.
ABSOLUTE_AFTER = 946_684_800.0
# No CAN bus carries more frames than this a second: at 1 Mbit/s the shortest classic frame
# (47 bits with the interframe space) allows 21,277; a CAN FD frame's arbitration and end
# fields alone (~30 bits at <= 1 Mbit/s) allow ~29,400 whatever the data rate.
MAX_FRAMES_PER_S_PER_BUS = 30_000
MIN_FRAMES_FOR_RATE = 1000  # fewer: timestamp resolution alone could fake a high rate
EXAMPLES = 5  # bad lines quoted in the warning
FD_LENGTHS = frozenset(CAN_FD_DLC)
CAN_ERR_FLAG = 0x20000000


@dataclass
class LogReport:
    """What reading a log found besides its frames: bad lines, its clock, its buses."""

    path: Path
    frames: int = 0
    malformed_lines: int = 0
    examples: list[str] = field(default_factory=list)
    first_ts: float | None = None  # the file's own timestamps, before --start-time
    last_ts: float | None = None
    buses: set[str] = field(default_factory=set)
    anchored: bool = False  # --start-time re-anchored the timestamps
    header_date: str | None = None  # an ASC header's `date` line, to suggest a --start-time

    def malformed(self, where: str, why: str) -> None:
        self.malformed_lines += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(f"{where}: {why}")

    def warnings(self) -> list[str]:
        """One line per thing a user must know about this log's replay."""
        out = []
        if self.malformed_lines:
            out.append(f"{self.path}: {self.malformed_lines} malformed line(s) skipped and counted as "
                       f"malformed_line ({'; '.join(self.examples)})")
        relative = self._relative()
        if relative:
            out.append(relative)
        rate = self._impossible_rate()
        if rate:
            out.append(rate)
        return out

    def _relative(self) -> str | None:
        if self.anchored or self.first_ts is None or self.first_ts >= ABSOLUTE_AFTER:
            return None
        example = "2024-05-01T08:30:00Z"
        began = ""
        if self.header_date:
            began = f" (its header says: date {self.header_date})"
            with contextlib.suppress(TypeError, ValueError, IndexError):
                example = parsedate_to_datetime(self.header_date).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return (f"{self.path}: timestamps start at {self.first_ts:.3f} s, not at a date: the log counts "
                f"from when the logger started, so replayed messages and state are dated "
                f"{datetime.fromtimestamp(self.first_ts, UTC):%Y-%m-%d}; pass --start-time with the UTC "
                f"time the recording began{began}, e.g. --start-time {example}")

    def _impossible_rate(self) -> str | None:
        if self.frames < MIN_FRAMES_FOR_RATE or self.first_ts is None or self.last_ts is None:
            return None
        buses = max(1, len(self.buses))
        limit = MAX_FRAMES_PER_S_PER_BUS * buses
        span = self.last_ts - self.first_ts
        meaningless = ("so event times, durations and ETAs from this replay are meaningless "
                       "(a 'Time Stamp' column holding the row number, not microseconds?)")
        if span <= 0:
            return f"{self.path}: all {self.frames} frames carry the same timestamp: {meaningless}"
        rate = (self.frames - 1) / span
        if rate <= limit:
            return None
        return (f"{self.path}: {self.frames} frames in {span:.6f} s of timestamps is {rate:,.0f} frames/s, "
                f"more than {buses} CAN bus(es) can carry (at most {limit:,} frames/s even at "
                f"1 Mbit/s): the timestamps are not time, {meaningless}")


def read_frames(path: Path, report: LogReport) -> Iterator[Frame]:
    """Every readable frame of a log, in file order; what else was found goes into report."""
    if not path.exists():
        raise SourceError(f"{path}: no such log file")
    reader = _READERS.get(path.suffix.lower(), _read_python_can)
    before = report.frames
    yield from _tally(reader(path, report), report)
    if report.frames == before and report.malformed_lines:
        raise SourceError(f"{path}: no readable frame, {report.malformed_lines} malformed line(s) or "
                          f"record(s) (is it a {path.suffix} log?): {'; '.join(report.examples[:2])}")


class Bad(NamedTuple):
    """A line or record that could not be read: where (e.g. "line 12") and why."""

    where: str
    why: str


Read = Iterator[Frame | Bad]  # what a format reader yields, in file order


def _tally(items: Read, report: LogReport) -> Iterator[Frame]:
    """The frames of one format reader; its bad lines, frame count and time span into report."""
    first: float | None = None
    ts = 0.0
    count = 0
    try:
        for item in items:
            if isinstance(item, Bad):
                report.malformed(*item)
                continue
            ts = item[0]
            if first is None:
                first = ts
            count += 1
            yield item
    finally:
        report.frames += count
        if first is not None:
            if report.first_ts is None:
                report.first_ts = first
            report.last_ts = ts


def _open_text(path: Path, encoding: str = "utf-8") -> TextIO:
    try:
        return path.open(encoding=encoding, errors="replace", newline=None)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read log: {exc.strerror or exc}") from None


# -- candump -l ------------------------------------------------------------------------------

_CANDUMP = re.compile(
    r"\((\d+(?:\.\d*)?)\)\s+(\S+)\s+([0-9A-Fa-f]{3}|[0-9A-Fa-f]{8})#"
    r"(?:#([0-9A-Fa-f])([0-9A-Fa-f]*)|([Rr]\d?)|([0-9A-Fa-f]*))(?:\s+[RT])?\s*")


def _read_candump(path: Path, report: LogReport) -> Read:
    """candump -l: `(1700000000.123456) can0 123#0102`, FD `123##1<64 bytes>`, remote `123#R`."""
    match = _CANDUMP.fullmatch
    fromhex = bytes.fromhex
    last_bus = None
    with _open_text(path) as fh:
        for n, line in enumerate(fh, 1):
            m = match(line)
            if m is None:
                if line.strip():
                    yield Bad(f"line {n}", _candump_why(line))
                continue
            stamp, bus, ident, fd_flags, fd_data, remote, data = m.groups()
            if remote is not None:
                continue  # a remote request carries no values
            hexdata = data if fd_flags is None else fd_data
            try:
                payload = fromhex(hexdata)
            except ValueError:
                yield Bad(f"line {n}", f"odd number of hex digits in the data {hexdata!r}")
                continue
            can_id = int(ident, 16)
            why = _candump_check(can_id, len(ident), len(payload), fd_flags is not None)
            if why:
                yield Bad(f"line {n}", why)
                continue
            if bus != last_bus:
                report.buses.add(bus)
                last_bus = bus
            ts = float(stamp)
            yield (ts, None, b"") if can_id & CAN_ERR_FLAG and len(ident) == 8 else (ts, can_id, payload)


def _candump_check(can_id: int, digits: int, length: int, fd: bool) -> str | None:
    if digits == 3 and can_id > 0x7FF:
        return f"standard id {can_id:03X} above 7FF"
    if digits == 8 and can_id > 0x1FFFFFFF and not can_id & CAN_ERR_FLAG:
        return f"extended id {can_id:08X} above 1FFFFFFF"
    if fd and length not in FD_LENGTHS:
        return f"{length} data bytes: not a CAN FD length"
    if not fd and length > 8:
        return f"{length} data bytes in a classic frame (CAN FD frames are written id##<flags><data>)"
    return None


def _candump_why(line: str) -> str:
    text = line.strip()
    if not text.startswith("("):
        return f"not '(time) interface id#data': {_quote(text)}"
    if len(text.split()) < 3:
        return f"cut short: {_quote(text)}"
    return f"not a candump frame: {_quote(text)}"


def _quote(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


# -- Vector ASC ------------------------------------------------------------------------------

_ASC_BASE = re.compile(r"base\s+(hex|dec)\b", re.IGNORECASE)
_ASC_DATE = re.compile(r"date\s+(.+)", re.IGNORECASE)
# A line that starts like a frame event (time, channel, id, ...), even when cut short: a bad
# frame, not one of ASC's many other events (statistics, comments, status), which are skipped.
_ASC_FRAME_LIKE = re.compile(r"\s*\d+\.\d*(?:\s+\d+(?:\s+[0-9A-Fa-f]+x?(?:\s.*)?)?)?\s*|\s*\d+\.\d+\s+CANFD\b.*")


def _read_asc(path: Path, report: LogReport) -> Read:
    """Vector ASC, its rows parsed by python-can's ASCReader, one line at a time.

    Timestamps are the file's own (relative to the measurement start, as python-can reads
    them by default); the header's `date` is only quoted when suggesting --start-time.
    """
    with _open_text(path) as fh:
        parser = can.ASCReader(fh)  # used for its row parsers only; the lines are read here
        for n, raw in enumerate(fh, 1):
            line = raw.strip()
            if not ASC_MESSAGE_REGEX.match(line):
                if _asc_other(parser, line, report):
                    yield Bad(f"line {n}", f"cut short: {_quote(line)}")
                continue
            try:
                frame = _asc_frame(parser, line, report)
            except (ValueError, IndexError, TypeError, KeyError) as exc:
                frame = f"{exc or type(exc).__name__}: {_quote(line)}"
            if isinstance(frame, str):
                yield Bad(f"line {n}", frame)
            elif frame is not None:
                yield frame


def _asc_other(parser: can.ASCReader, line: str, report: LogReport) -> bool:
    """A line other than a frame event: header settings are taken; True when it is a cut frame."""
    base = _ASC_BASE.match(line)
    if base:
        parser.base = base.group(1).lower()
        parser._converted_base = parser._check_base(parser.base)
    elif (date := _ASC_DATE.match(line)) and report.header_date is None:
        report.header_date = date.group(1)
    else:
        return _ASC_FRAME_LIKE.fullmatch(line) is not None
    return False


def _asc_frame(parser: can.ASCReader, line: str, report: LogReport) -> Frame | str | None:
    """One ASC event line -> a frame, None (not a data frame) or why it is malformed."""
    stamp, channel, rest = line.split(None, 2)
    kwargs: dict[str, Any] = {"timestamp": float(stamp)}
    if channel == "CANFD":
        kwargs["is_fd"] = True
        msg = parser._process_fd_can_frame(rest, kwargs)
    elif channel.isdigit():
        msg = parser._process_classic_can_frame(rest, kwargs)
    else:
        return None
    if not math.isfinite(msg.timestamp):
        return f"timestamp {stamp!r} is not a number"
    if not msg.is_error_frame and not msg.is_remote_frame:
        expected = msg.dlc if msg.is_fd else min(8, msg.dlc)
        if len(msg.data) != expected or (msg.is_fd and expected not in FD_LENGTHS):
            return f"{len(msg.data)} data bytes where the record says {expected} (cut short?): {_quote(line)}"
    report.buses.add(channel if channel != "CANFD" else rest.split(None, 1)[0])
    return _from_message(msg)


# -- PCAN TRC --------------------------------------------------------------------------------

class _CountedLines:
    """The lines of a file, counted, so python-can's header parser leaves the line number known."""

    def __init__(self, fh: IO[str]) -> None:
        self.fh = fh
        self.n = 0

    def __iter__(self) -> _CountedLines:
        return self

    def __next__(self) -> str:
        line = next(self.fh)
        self.n += 1
        return line


def _read_trc(path: Path, report: LogReport) -> Read:
    """PCAN TRC 1.0-2.1, its rows parsed by python-can's TRCReader, one line at a time."""
    with _open_text(path) as fh:
        parser = can.TRCReader(fh)
        lines = _CountedLines(fh)
        parser.file = lines  # type: ignore[assignment]
        try:
            first_line = parser._extract_header()
        except (ValueError, NotImplementedError) as exc:
            raise SourceError(f"{path}: unreadable TRC header: {exc}") from None
        pending = [(lines.n, first_line)] if first_line else []
        for n, raw in _chain(pending, lines):
            line = raw.strip()
            if not line or line.startswith(";"):
                continue
            frame = _trc_frame(parser, line)
            if isinstance(frame, str):
                yield Bad(f"line {n}", frame)
            elif frame is not None:
                yield frame


def _chain(pending: list[tuple[int, str]], lines: _CountedLines) -> Iterator[tuple[int, str]]:
    yield from pending
    for line in lines:
        yield lines.n, line


# TRC record types (1.x: Rx/Tx/Warng/Error; 2.x: DT FD FB FE BI RR data, ST EC ER EV events)
_TRC_EVENTS = frozenset({"Rx", "Tx", "Warng", "Error", "DT", "FD", "FB", "FE", "BI", "RR", "ST", "EC", "ER", "EV"})


def _trc_frame(parser: can.TRCReader, line: str) -> Frame | str | None:
    try:
        msg = parser._parse_cols(tuple(line.split(maxsplit=parser._num_columns)))
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        return f"{exc or type(exc).__name__}: {_quote(line)}"
    if msg is None:  # an event other than a frame (status, error counter), or a cut type column
        known = _TRC_EVENTS.intersection(line.split()[:5]) or "FFFFFFFF" in line
        return None if known else f"unknown record type: {_quote(line)}"
    if not math.isfinite(msg.timestamp):
        return f"timestamp is not a number: {_quote(line)}"
    if not msg.is_error_frame and not msg.is_remote_frame:
        expected = dlc2len(msg.dlc) if msg.is_fd else min(8, msg.dlc)
        if len(msg.data) != expected:
            return f"{len(msg.data)} data bytes where the record says {expected} (cut short?): {_quote(line)}"
    return _from_message(msg)


# -- SavvyCAN / GVRET CSV --------------------------------------------------------------------

def _read_gvret(path: Path, report: LogReport) -> Read:
    """SavvyCAN/GVRET CSV: Time Stamp (us), ID (hex), Extended, [Dir,] Bus, LEN or DLC, D1..Dn.

    A UTF-8 byte-order mark, `DLC` for `LEN`, extra columns and CAN FD rows (up to 64 data
    cells) are read like the plain file.
    """
    with _open_text(path, encoding="utf-8-sig") as fh:
        columns = _gvret_columns(path, fh.readline())
        i_id, i_len, i_bus, i_d1, is_dlc = columns
        for n, line in enumerate(fh, 2):
            row = line.rstrip("\r\n").split(",")
            if len(row) == 1 and not row[0].strip():
                continue
            try:
                ts = int(row[0]) / 1e6
                can_id = int(row[i_id], 16)
                size = int(row[i_len])
                if is_dlc and 8 < size <= 15:
                    size = dlc2len(size)
                cells = row[i_d1:i_d1 + size]
                payload = bytes.fromhex("".join(cells))
            except (ValueError, IndexError):
                yield Bad(f"line {n}", f"not a GVRET row: {_quote(line.strip())}")
                continue
            if len(payload) != size or len(cells) != size or not 0 <= can_id <= 0x1FFFFFFF \
                    or size not in FD_LENGTHS:
                yield Bad(f"line {n}", f"{len(cells)} data cells for length {size} or bad id: "
                                       f"{_quote(line.strip())}")
                continue
            if i_bus is not None:
                report.buses.add(row[i_bus])
            yield ts, can_id, payload


def _gvret_columns(path: Path, header_line: str) -> tuple[int, int, int | None, int, bool]:
    header = [name.strip().lower() for name in header_line.strip().split(",")]
    shown = _quote(header_line.strip(), 80)
    if not header or header[0] != "time stamp":
        raise SourceError(f"{path}: not a GVRET/SavvyCAN CSV: the first column must be 'Time Stamp' "
                          f"(header: {shown})")
    cols = {name: i for i, name in enumerate(header)}
    i_len = cols.get("len", cols.get("dlc"))
    missing = [name for name, i in (("ID", cols.get("id")), ("LEN (or DLC)", i_len)) if i is None]
    if missing or i_len is None:
        raise SourceError(f"{path}: CSV header lacks column {' and '.join(missing)} (header: {shown})")
    return cols["id"], i_len, cols.get("bus"), cols.get("d1", i_len + 1), "len" not in cols


# -- BLF and anything else python-can reads ---------------------------------------------------

def _read_blf(path: Path, report: LogReport) -> Read:
    """BLF (binary): a cut or corrupt tail ends reading, counted as one malformed record."""
    try:
        reader = can.BLFReader(str(path))
    except (BLFParseError, ValueError, OSError, struct.error) as exc:
        raise SourceError(f"{path}: cannot read BLF: {exc or type(exc).__name__}") from None
    count = 0
    try:
        for msg in reader:
            frame = _from_message(msg)
            if frame is None:
                continue
            report.buses.add(str(msg.channel))
            count += 1
            yield frame
    except (BLFParseError, struct.error, zlib.error, ValueError, OSError, EOFError) as exc:
        yield Bad(f"after frame {count}", f"unreadable BLF data ({exc or type(exc).__name__}); "
                                          "the rest of the file is skipped")
        return
    finally:
        reader.stop()
    size = path.stat().st_size
    if reader.file_size > size:  # python-can reads a cut container as far as it goes, silently
        yield Bad(f"byte {size}", f"the file ends before the {reader.file_size} bytes its header "
                                  "announces (cut short; the frames up to the cut were read)")


def _read_python_can(path: Path, report: LogReport) -> Read:
    """Formats python-can reads that carfriend has no line reader for: the first error ends it."""
    try:
        reader = can.LogReader(str(path))
    except (ValueError, OSError) as exc:
        raise SourceError(f"{path}: cannot read log: {exc}") from None
    try:
        for msg in reader:
            frame = _from_message(msg)
            if frame is not None:
                yield frame
    except (ValueError, OSError, EOFError) as exc:
        raise SourceError(f"{path}: unreadable log: {exc}") from None
    finally:
        reader.stop()


def _from_message(msg: can.Message) -> Frame | None:
    """The one place a logged can.Message becomes the core's frame (None: a remote frame)."""
    if msg.is_error_frame:
        return msg.timestamp, None, b""
    if msg.is_remote_frame:
        return None
    return msg.timestamp, msg.arbitration_id, bytes(msg.data)


_READERS = {".log": _read_candump, ".asc": _read_asc, ".trc": _read_trc, ".csv": _read_gvret,
            ".blf": _read_blf}
