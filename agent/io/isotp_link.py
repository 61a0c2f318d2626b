"""ISO-TP over the agent's own receive loop: can-isotp's TransportLayer per ECU, fed frame by frame (IO).

One reader of the bus: the daemon's receive loop hands each frame of a response id to the
port of that id; can-isotp reassembles it (and sends the flow control to the ECU, unless the
port listens only: replay, `[can] listen_only`). Transmission goes through ``send``, the
daemon's bus, whose listen-only wrapper refuses it. can-isotp's TransportLayerLogic is the
TransportLayer without its threads (TransportLayer, never started, would queue a wake-up token
per send that nothing drains): ``process()`` runs on the caller's thread. Bad frames are
counted by reason, never raised.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable

import can
import isotp

log = logging.getLogger(__name__)
ISOTP_LOGGER = "carfriend.isotp"  # can-isotp logs every bad frame at WARNING: kept at ERROR
logging.getLogger(ISOTP_LOGGER).setLevel(logging.ERROR)

PADDING = 0xAA
MAX_PAYLOAD = 4095
Send = Callable[[can.Message], None]

ERROR_REASONS: dict[type[Exception], str] = {
    isotp.errors.WrongSequenceNumberError: "isotp_out_of_order",
    isotp.errors.UnexpectedConsecutiveFrameError: "isotp_unexpected_consecutive",
    isotp.errors.ConsecutiveFrameTimeoutError: "isotp_truncated",
    isotp.errors.ReceptionInterruptedWithFirstFrameError: "isotp_interrupted",
    isotp.errors.ReceptionInterruptedWithSingleFrameError: "isotp_interrupted",
    isotp.errors.InvalidCanDataError: "isotp_malformed",
    isotp.errors.FrameTooLongError: "isotp_too_long",
    isotp.errors.UnexpectedFlowControlError: "isotp_unexpected_flow_control",
    isotp.errors.FlowControlTimeoutError: "isotp_flow_control_timeout",
    isotp.errors.ChangingInvalidRXDLError: "isotp_malformed",
    isotp.errors.InvalidCanFdFirstFrameRXDL: "isotp_malformed",
    isotp.errors.MissingEscapeSequenceError: "isotp_malformed",
}


class IsoTpPort:
    """One (request id, response id) pair: reassembles responses, sends requests and flow control."""

    def __init__(self, tx_id: int, rx_id: int, extended: bool, send: Send | None,
                 counts: Counter[str] | None = None) -> None:
        self.tx_id, self.rx_id, self.extended = tx_id, rx_id, extended
        self.send_frame = send
        self.now = 0.0  # event time, stamped on what is sent (a candump of the session stays in order)
        self.counts: Counter[str] = counts if counts is not None else Counter()
        self._rx: deque[isotp.CanMessage] = deque()
        mode = isotp.AddressingMode.Normal_29bits if extended else isotp.AddressingMode.Normal_11bits
        params = {
            "tx_padding": PADDING, "blocksize": 0, "stmin": 0, "max_frame_size": MAX_PAYLOAD,
            "rx_consecutive_frame_timeout": 1000, "rx_flowcontrol_timeout": 1000,
            "listen_mode": send is None, "logger_name": ISOTP_LOGGER, "wait_func": _no_wait,
        }
        self.layer = isotp.TransportLayerLogic(rxfn=self._next_frame, txfn=self._transmit,
                                          address=isotp.Address(mode, txid=tx_id, rxid=rx_id),
                                          error_handler=self._error, params=params)

    def _next_frame(self, _timeout: float) -> isotp.CanMessage | None:
        return self._rx.popleft() if self._rx else None

    def _transmit(self, msg: isotp.CanMessage) -> None:
        if self.send_frame is None:
            return  # listen mode: can-isotp sends nothing then anyway
        self.send_frame(can.Message(timestamp=self.now, arbitration_id=msg.arbitration_id,
                                    data=bytes(msg.data), is_extended_id=msg.is_extended_id))
        self.counts["frames_sent"] += 1

    def _error(self, error: Exception) -> None:
        self.counts[ERROR_REASONS.get(type(error), "isotp_error")] += 1

    def feed(self, data: bytes) -> list[bytes]:
        """One received frame of rx_id: the complete payloads it finished (mostly none)."""
        if not 1 <= len(data) <= 8:
            self.counts["isotp_malformed"] += 1  # classic CAN: 1..8 bytes (a log line run together)
            return []
        self._rx.append(isotp.CanMessage(arbitration_id=self.rx_id, data=data, extended_id=self.extended))
        try:
            self.layer.process()
        except (can.CanError, OSError) as exc:  # the flow control could not be sent
            self.counts["send_failed"] += 1
            log.debug("flow control to 0x%X not sent: %s", self.tx_id, exc)
            self.layer.stop_receiving()
        return self._received()

    def send(self, payload: bytes, functional: bool = False) -> None:
        """Send a request (raises the bus's error, e.g. listen-only)."""
        target = isotp.TargetAddressType.Functional if functional else isotp.TargetAddressType.Physical
        self.layer.send(payload, target_address_type=target)
        try:
            self.layer.process()
        except BaseException:
            self.layer.stop_sending()
            raise

    def tick(self) -> list[bytes]:
        """Let can-isotp's timers run (consecutive frames, flow control) without a frame."""
        if self.layer.is_rx_active() or self.layer.transmitting():
            self.layer.process()
        return self._received()

    def _received(self) -> list[bytes]:
        out = []
        while (payload := self.layer.recv()) is not None:
            out.append(bytes(payload))
        return out


def _no_wait(_s: float) -> None:
    """can-isotp probes wait_func once at start; the receive loop never waits inside it."""
