"""An slcan adapter emulated on a pseudo-terminal: the simulator is the USB-CAN dongle, the
agent opens python-can's `slcan` interface on the pty's path (does IO).

The slcan protocol carries no timestamps in this form, so the receiver stamps frames with its
own clock, not simulated time.
"""

from __future__ import annotations

import contextlib
import os
import select
import tty
from typing import Any

import can


class SlcanPtyBus(can.BusABC):
    """The adapter side of an slcan link: frames sent here reach whoever opened ``tty_path``."""

    def __init__(self, channel: Any = None, **kwargs: Any) -> None:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no CR -> NL translation, no line buffering
        os.set_blocking(self._master, False)
        self.tty_path = os.ttyname(self._slave)
        self._pending = bytearray()
        self.dropped = 0
        self.channel_info = f"slcan adapter on {self.tty_path}"
        super().__init__(channel=self.tty_path, **kwargs)

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        line = _encode(msg)
        if line is None:
            return  # slcan has no error frames
        try:
            os.write(self._master, line)
        except BlockingIOError:
            self.dropped += 1  # nobody reads the serial port: a real adapter drops too
        except OSError as exc:
            raise can.CanOperationError(f"{self.tty_path}: {exc}") from exc

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        msg = self._parse_pending()
        if msg is not None:
            return msg, False
        ready, _, _ = select.select([self._master], [], [], timeout)
        if ready:
            with contextlib.suppress(BlockingIOError, OSError):  # EIO: the other side closed
                self._pending += os.read(self._master, 4096)
        return self._parse_pending(), False

    def _parse_pending(self) -> can.Message | None:
        while b"\r" in self._pending:
            line, _, rest = bytes(self._pending).partition(b"\r")
            self._pending = bytearray(rest)
            msg = _decode(line.decode("ascii", "replace"))
            if msg is not None:
                return msg
        return None

    def fileno(self) -> int:
        return self._master

    def shutdown(self) -> None:
        super().shutdown()
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def _encode(msg: can.Message) -> bytes | None:
    if msg.is_error_frame:
        return None
    if msg.is_remote_frame:
        head = f"R{msg.arbitration_id:08X}" if msg.is_extended_id else f"r{msg.arbitration_id:03X}"
        return f"{head}{msg.dlc:d}\r".encode()
    head = f"T{msg.arbitration_id:08X}" if msg.is_extended_id else f"t{msg.arbitration_id:03X}"
    return f"{head}{len(msg.data):d}{bytes(msg.data).hex().upper()}\r".encode()


def _decode(line: str) -> can.Message | None:
    """A `t`/`T` frame line from the host; other lines (O, C, S6, V) need no answer here."""
    try:
        if line[:1] == "t":
            dlc = int(line[4])
            return can.Message(arbitration_id=int(line[1:4], 16), is_extended_id=False,
                               data=bytes.fromhex(line[5:5 + 2 * dlc]))
        if line[:1] == "T":
            dlc = int(line[9])
            return can.Message(arbitration_id=int(line[1:9], 16), is_extended_id=True,
                               data=bytes.fromhex(line[10:10 + 2 * dlc]))
    except (ValueError, IndexError):
        return None
    return None
