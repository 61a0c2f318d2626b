"""The `[diagnostics]` section of a vehicle profile: pydantic models, read-only services only (no IO).

A request names the ECU (request and response ids, 11- or 29-bit, or functional 0x7DF), the
service and identifier, how often to ask in each vehicle mode, and where each value sits in
the response after the service/identifier echo. See docs/diagnostics.md.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FUNCTIONAL_ID = 0x7DF
OBD_RESPONSE_IDS = tuple(range(0x7E8, 0x7F0))

# What each allowed service reads. Everything else is refused: carfriend never writes to,
# resets, unlocks or controls an ECU.
READ_SERVICES: dict[int, str] = {
    0x01: "OBD-II current data",
    0x03: "OBD-II stored DTCs",
    0x07: "OBD-II pending DTCs",
    0x09: "OBD-II vehicle information",
    0x0A: "OBD-II permanent DTCs",
    0x19: "UDS ReadDTCInformation (sub-function 0x02 only)",
    0x21: "KWP2000 ReadDataByLocalIdentifier",
    0x22: "UDS ReadDataByIdentifier",
}
REFUSED_SERVICES: dict[int, str] = {
    0x04: "clears DTCs", 0x08: "controls an on-board system", 0x10: "changes the diagnostic session",
    0x11: "resets the ECU", 0x14: "clears DTCs", 0x27: "unlocks security access",
    0x28: "switches ECU communication off", 0x2E: "writes data (WriteDataByIdentifier)",
    0x2F: "controls inputs/outputs", 0x31: "runs a routine (RoutineControl)",
    0x34: "starts a download", 0x35: "starts an upload", 0x36: "transfers data",
    0x3B: "writes data (KWP)", 0x3D: "writes memory", 0x3E: "keeps a session alive",
    0x85: "switches DTC setting",
}
# Bytes of the identifier that follow the service byte.
IDENTIFIER_BYTES = {0x01: 1, 0x03: 0, 0x07: 0, 0x09: 1, 0x0A: 0, 0x19: 2, 0x21: 1, 0x22: 2}

Mode = Literal["driving", "charging", "parked"]
MODES: tuple[Mode, ...] = ("driving", "charging", "parked")
Period = Annotated[float, Field(ge=0, le=86400)]  # seconds; 0 = never in that mode


def service_problem(service: int) -> str | None:
    """Why a service may not be configured, or None when it is a read service."""
    if service in READ_SERVICES:
        return None
    what = REFUSED_SERVICES.get(service, "is not a read service carfriend knows")
    allowed = ", ".join(f"0x{s:02X}" for s in READ_SERVICES)
    return f"service 0x{service:02X} {what}: only read services are allowed ({allowed})"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Periods(_Model):
    """Seconds between two polls in each vehicle mode (0: never). Asleep: never, always."""

    driving: Period = 10.0
    charging: Period = 10.0
    parked: Period = 300.0


class DiagSignal(_Model):
    """One value in a response payload, counted from the first byte after the echo."""

    path: Annotated[str, Field(pattern=r"^Vehicle(\.[A-Za-z0-9_]+)+$")]
    # Bit index, counted from the most significant bit of the first byte (0) onward, as OBDb's bix.
    bit: Annotated[int, Field(ge=0, le=4095 * 8)]
    length: Annotated[int, Field(ge=1, le=64)]
    signed: bool = False
    byte_order: Literal["big_endian", "little_endian"] = "big_endian"
    # VSS value = raw * scale + offset
    scale: float = 1.0
    offset: float = 0.0
    min: float | None = None
    max: float | None = None
    not_available: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)  # raw values
    true_values: list[Annotated[int, Field(ge=0)]] | None = None  # raw values meaning true
    stale_after_s: Annotated[float, Field(gt=0)] | None = None

    @field_validator("scale", "offset", "min", "max")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _layout(self) -> DiagSignal:
        if self.byte_order == "little_endian" and self.length > 8 and (self.bit % 8 or self.length % 8):
            raise ValueError("a little-endian value longer than a byte must start on a byte and "
                             "span whole bytes (bit a multiple of 8, length a multiple of 8)")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        return self


class DiagRequest(_Model):
    """One diagnostic request, polled on its own schedule."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,48}$")] | None = None
    tx_id: Annotated[int, Field(ge=0, le=0x1FFFFFFF)]
    # None: functional 0x7DF, answered by any of 0x7E8-0x7EF; else the one response id.
    rx_id: Annotated[int, Field(ge=0, le=0x1FFFFFFF)] | None = None
    extended: bool | None = None  # 29-bit ids; default: an id above 0x7FF
    service: Annotated[int, Field(ge=0, le=0xFF)]
    identifier: Annotated[int, Field(ge=0, le=0xFFFF)] | None = None
    timeout_s: Annotated[float, Field(gt=0, le=30)] = 1.0
    periods: Periods | None = None  # default: [diagnostics.periods]
    signal: list[DiagSignal] = Field(default_factory=list)
    # Instead of inline signals: a message of the config's DBCs describing the whole reassembled
    # response ("UDS DBC" style: the service byte first, multiplexed on service and identifier),
    # its signals mapped to VSS in [signals] as "MESSAGE.SIGNAL".
    dbc_message: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,64}$")] | None = None

    @model_validator(mode="after")
    def _read_only(self) -> DiagRequest:
        label = f'"{self.name}"' if self.name else f"0x{self.tx_id:X}"
        problem = service_problem(self.service)
        if problem is not None:
            raise ValueError(f"request {label}: {problem}")
        want = IDENTIFIER_BYTES[self.service]
        if want and self.identifier is None:
            raise ValueError(f"request {label}: service 0x{self.service:02X} needs an identifier "
                             f"({'a PID' if want == 1 else 'a 16-bit DID'})")
        if self.identifier is not None and self.identifier >= 1 << (8 * want):
            raise ValueError(f"request {label}: identifier 0x{self.identifier:X} does not fit "
                             f"service 0x{self.service:02X} ({want} byte(s))")
        if self.service == 0x19 and self.identifier is not None and self.identifier >> 8 != 0x02:
            raise ValueError(f"request {label}: service 0x19 only with sub-function 0x02 "
                             "(identifier 0x02MM, MM the status mask)")
        if self.dbc_message is not None and self.signal:
            raise ValueError(f"request {label}: dbc_message and inline signals exclude each other")
        if self.tx_id != FUNCTIONAL_ID and self.rx_id is None:
            raise ValueError(f"request {label}: rx_id is required unless tx_id is 0x7DF (functional)")
        if not self.is_extended and (self.tx_id > 0x7FF or (self.rx_id or 0) > 0x7FF):
            raise ValueError(f"request {label}: an id above 0x7FF needs extended = true")
        return self

    @property
    def is_extended(self) -> bool:
        if self.extended is not None:
            return self.extended
        return self.tx_id > 0x7FF or (self.rx_id or 0) > 0x7FF

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        ident = "" if self.identifier is None else f"{self.identifier:0{2 * IDENTIFIER_BYTES[self.service]}X}"
        return f"{self.tx_id:X}.{self.service:02X}{ident}"


class DiagnosticsConfig(_Model):
    """`[diagnostics]`: what to poll, when, and how gently."""

    enabled: bool = True
    # An OBDb signal set (format v3), supplied by the user like a DBC (it is CC BY-SA).
    signalset: Path | None = None
    # With [vehicle] model_year set, also poll the signal set's commands OBDb has not confirmed
    # for that year (`dbg`, `dbgfilter`); a command its `filter` excludes is never polled.
    signalset_unconfirmed: bool = False
    # The SAE J1979 PIDs built in (speed, 12 V, odometer, battery remaining, MIL, DTCs), asked
    # once which the car supports.
    standard_pids: bool = True
    periods: Periods = Periods()
    # Polling stays under this share of the bus bitrate.
    bus_share: Annotated[float, Field(gt=0, le=0.2)] = 0.01
    # The car counts as asleep when no frame of its own was heard for this long: no request then.
    quiet_after_s: Annotated[float, Field(gt=0, le=60)] = 3.0
    # After this many timeouts in a row an ECU is left alone, 30 s doubling to backoff_max_s.
    timeouts_before_backoff: Annotated[int, Field(ge=1, le=100)] = 3
    backoff_max_s: Annotated[float, Field(ge=1)] = 600.0
    # Seconds between two DTC reads (services 03, 07, 0A) while awake; 0: never.
    dtc_period_s: Period = 300.0
    # Further evidence that the car is awake, besides any frame of its own: ids of the car's own
    # frames (e.g. a network-management heartbeat) that pass the kernel filters for that, and a
    # boolean VSS path mapped from a broadcast DBC signal (ignition on, IsCharging) whose frame,
    # decoded true, counts. Both only within quiet_after_s; never polling traffic.
    awake_ids: list[Annotated[int, Field(ge=0, le=0x1FFFFFFF)]] = Field(default_factory=list, max_length=32)
    awake_signal: Annotated[str, Field(pattern=r"^Vehicle(\.[A-Za-z0-9_]+)+$")] | None = None
    request: list[DiagRequest] = Field(default_factory=list)

    @model_validator(mode="after")
    def _awake_ids(self) -> DiagnosticsConfig:
        polling = {FUNCTIONAL_ID, *range(0x7E0, 0x7F0)}
        for r in self.request:
            polling.add(r.tx_id)
            if r.rx_id is not None:
                polling.add(r.rx_id)
        for fid in self.awake_ids:
            if fid in polling:
                raise ValueError(f"awake_ids: 0x{fid:X} is polling traffic (a request or response id): "
                                 "only frames the car sends of its own may show it awake")
        return self
