"""OBDb signal sets (format v3) -> diagnostic plans mapped to VSS, with unit conversion (no IO).

The user supplies the JSON file, like a DBC (OBDb's data is CC BY-SA; carfriend ships none).
``suggestedMetric`` names map to VSS paths by SUGGESTED_METRICS; ``[signals]`` entries whose
source is ``signalset.<SIGNAL_ID>`` map any signal to any path and override the table. Values
are converted to the VSS unit of their path (miles to km, psi to kPa, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.core import vss
from agent.core.decode import ndigits
from agent.core.diag_plan import BitSpec, DiagPlan, DiagValue
from agent.core.diag_profile import (
    FUNCTIONAL_ID,
    IDENTIFIER_BYTES,
    OBD_RESPONSE_IDS,
    DiagnosticsConfig,
    service_problem,
)
from agent.core.settings import SignalMap

MAX_SIGNALSET_BYTES = 8 << 20
SIGNALSET_SOURCE = "signalset"  # [signals] "Vehicle.X" = "signalset.<SIGNAL_ID>"
TB = vss.TB
STATE_OF_HEALTH = f"{TB}.StateOfHealth"

SUGGESTED_METRICS: dict[str, str] = {
    "stateOfCharge": vss.SOC,
    "starterBatteryVoltage": vss.AUX_VOLTAGE,
    "isCharging": vss.IS_CHARGING,
    "pluggedIn": vss.CABLE_CONNECTED,
    "odometer": vss.ODOMETER,
    "speed": vss.SPEED,
    "stateOfHealth": STATE_OF_HEALTH,
    "frontLeftTirePressure": "Vehicle.Chassis.Axle.Row1.Wheel.Left.Tire.Pressure",
    "frontRightTirePressure": "Vehicle.Chassis.Axle.Row1.Wheel.Right.Tire.Pressure",
    "rearLeftTirePressure": "Vehicle.Chassis.Axle.Row2.Wheel.Left.Tire.Pressure",
    "rearRightTirePressure": "Vehicle.Chassis.Axle.Row2.Wheel.Right.Tire.Pressure",
    "fuelTankLevel": "Vehicle.Powertrain.FuelSystem.RelativeLevel",
    "ambientAirTemperature": "Vehicle.Exterior.AirTemperature",
    "engineCoolantTemperature": "Vehicle.Powertrain.CombustionEngine.ECT",
    "electricRange": vss.RANGE,
}

# The unit each VSS path carries; values are converted to it.
VSS_UNITS: dict[str, str] = {
    vss.SOC: "percent", vss.AUX_VOLTAGE: "volts", vss.ODOMETER: "kilometers", vss.SPEED: "kilometersPerHour",
    STATE_OF_HEALTH: "percent", vss.PACK_VOLTAGE: "volts", vss.PACK_CURRENT: "amps", vss.PACK_TEMP: "celsius",
    vss.TIME_TO_COMPLETE: "seconds", vss.CHARGE_LIMIT: "percent", vss.CHARGE_POWER: "kilowatts",
    vss.PACK_POWER: "watts", vss.RANGE: "meters", vss.CABIN_TEMP: "celsius", "Vehicle.Exterior.AirTemperature": "celsius",
    "Vehicle.Powertrain.FuelSystem.RelativeLevel": "percent",
    "Vehicle.Powertrain.CombustionEngine.ECT": "celsius",
    **{p: "kilopascal" for m, p in SUGGESTED_METRICS.items() if m.endswith("TirePressure")},
}
# (from, to) -> (factor, offset): to = from * factor + offset
CONVERSIONS: dict[tuple[str, str], tuple[float, float]] = {
    ("miles", "kilometers"): (1.609344, 0.0),
    ("meters", "kilometers"): (0.001, 0.0),
    ("milesPerHour", "kilometersPerHour"): (1.609344, 0.0),
    ("psi", "kilopascal"): (6.894757, 0.0),
    ("bars", "kilopascal"): (100.0, 0.0),
    ("fahrenheit", "celsius"): (5.0 / 9.0, -32.0 * 5.0 / 9.0),
    ("minutes", "seconds"): (60.0, 0.0),
    ("hours", "seconds"): (3600.0, 0.0),
    ("watts", "kilowatts"): (0.001, 0.0),
    ("kilowatts", "watts"): (1000.0, 0.0),
    ("kilometers", "meters"): (1000.0, 0.0),
    ("miles", "meters"): (1609.344, 0.0),
    ("millivolts", "volts"): (0.001, 0.0),
}
BOOL_UNITS = frozenset({"offon", "yesno", "noyes"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MapEntry(_Strict):
    value: str
    description: str | None = None


class Fmt(_Strict):
    bix: Annotated[int, Field(ge=0, le=4095 * 8)] = 0
    len: Annotated[int, Field(ge=1, le=64)]
    mul: float = 1.0
    div: Annotated[float, Field(allow_inf_nan=False)] = 1.0
    add: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    sign: bool = False
    blsb: bool = False
    min: Annotated[float, Field(allow_inf_nan=False)] | None = None
    max: Annotated[float, Field(allow_inf_nan=False)] | None = None
    nullmin: Annotated[float, Field(allow_inf_nan=False)] | None = None
    nullmax: Annotated[float, Field(allow_inf_nan=False)] | None = None
    unit: str | None = None
    map: dict[str, MapEntry] | None = None

    @field_validator("div", "mul")
    @classmethod
    def _nonzero(cls, value: float) -> float:
        if value == 0:
            raise ValueError("must not be 0")
        return value


class ObdbSignal(_Strict):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]{1,64}$")]
    fmt: Fmt
    path: str | None = None
    name: str | None = None
    description: str | None = None
    suggestedMetric: str | None = None  # noqa: N815 - OBDb's spelling
    hidden: bool | None = None
    comment: str | None = None


class YearFilter(_Strict):
    """OBDb's model-year filter: `from`/`to` bound a range (from <= to) or, crossed (from > to),
    leave a gap ("to 2019, from 2025": up to 2019 and from 2025 on); `years` adds single years."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    from_year: int | None = Field(default=None, alias="from", ge=1900, le=2200, strict=True)
    to_year: int | None = Field(default=None, alias="to", ge=1900, le=2200, strict=True)
    years: Annotated[list[Annotated[int, Field(ge=1900, le=2200, strict=True)]], Field(max_length=200)] | None = None

    def matches(self, year: int) -> bool:
        lo, hi = self.from_year, self.to_year
        if lo is not None and hi is not None:
            hit = lo <= year <= hi if lo <= hi else (year >= lo or year <= hi)
        else:
            hit = (lo is not None and year >= lo) or (hi is not None and year <= hi)
        return hit or year in (self.years or ())


class ObdbCommand(_Strict):
    hdr: Annotated[str, Field(pattern=r"^([0-9A-Fa-f]{3}|[0-9A-Fa-f]{6}|[0-9A-Fa-f]{8})$")]
    rax: Annotated[str, Field(pattern=r"^([0-9A-Fa-f]{3}|[0-9A-Fa-f]{6}|[0-9A-Fa-f]{8})$")] | None = None
    cmd: dict[str, str]
    freq: Annotated[float, Field(gt=0, le=86400)] = 10.0
    fcm1: bool = False  # the ECU waits for a flow control from the tester: carfriend always sends one
    signals: list[ObdbSignal]
    # Model years: `filter` = the years the command exists in; `dbgfilter` = the years it is
    # not confirmed for yet (OBDb sends it there in debug mode only); `dbg` = unconfirmed in all.
    dbgfilter: YearFilter | None = None
    filter: YearFilter | None = None
    dbg: bool | None = None
    pri: str | None = None


class SignalSet(_Strict):
    commands: list[ObdbCommand]
    signalGroups: list[dict[str, Any]] | None = None  # noqa: N815 - OBDb's spelling; display only


def parse_signalset(text: bytes, where: str) -> tuple[SignalSet | None, list[str]]:
    """Validate a signal set: (the set, []) or (None, every problem, naming command and signal)."""
    if len(text) > MAX_SIGNALSET_BYTES:
        return None, [f"{where}: signal set larger than {MAX_SIGNALSET_BYTES >> 20} MiB"]
    try:
        return SignalSet.model_validate_json(text), []
    except ValidationError as exc:
        return None, [f"{where}: {_locate(err)}: {err['msg']}" for err in exc.errors()]


def _locate(err: Any) -> str:
    loc = list(err["loc"])
    parts = []
    if len(loc) >= 2 and loc[0] == "commands" and isinstance(loc[1], int):
        parts.append(f"command #{loc[1] + 1}")
        loc = loc[2:]
        if len(loc) >= 2 and loc[0] == "signals" and isinstance(loc[1], int):
            parts.append(f"signal #{loc[1] + 1}")
            loc = loc[2:]
    if loc:
        parts.append(".".join(str(p) for p in loc))
    return ", ".join(parts) or "(top level)"


def _can_id(text: str) -> tuple[int, bool]:
    value = int(text, 16)
    if len(text) == 6:
        return 0x18000000 | value, True  # ELM327's 29-bit header shorthand: priority 0x18
    return value, len(text) == 8


class SignalSetBuilder:
    """Turns a validated signal set into DiagPlans; problems and notes are collected."""

    def __init__(self, sset: SignalSet, where: str, diag: DiagnosticsConfig,
                 overrides: Mapping[str, SignalMap], model_year: int | None = None) -> None:
        """model_year: keep the commands of that year (see for_year); None: every command."""
        self.where, self.diag = where, diag
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.sset = sset if model_year is None else self.for_year(sset, model_year, diag.signalset_unconfirmed)
        # path -> signal id, from [signals] "Vehicle.X" = "signalset.ID"
        self.overrides = {path: m for path, m in overrides.items() if m.message == SIGNALSET_SOURCE}
        self.by_id = {s.id: (c, s) for c in self.sset.commands for s in c.signals}

    def for_year(self, sset: SignalSet, year: int, unconfirmed: bool) -> SignalSet:
        """The commands of model year `year`: those its `filter` admits, less those OBDb has not
        confirmed for it (`dbg`, or a `dbgfilter` matching it) unless `unconfirmed`. A note
        says what was left out."""
        kept, other, unsure = [], [], []
        for c in sset.commands:
            label = f"{c.hdr} {''.join(f'{k}{v}' for k, v in c.cmd.items())}"
            if c.filter is not None and not c.filter.matches(year):
                other.append(label)
            elif not unconfirmed and (c.dbg or (c.dbgfilter is not None and c.dbgfilter.matches(year))):
                unsure.append(label)
            else:
                kept.append(c)
        if other:
            self.notes.append(f"{self.where}: not polled, not for model year {year} (filter): {', '.join(other)}")
        if unsure:
            self.notes.append(f"{self.where}: not polled, not confirmed for model year {year} (dbgfilter; "
                              f"[diagnostics] signalset_unconfirmed = true polls them): {', '.join(unsure)}")
        return sset.model_copy(update={"commands": kept})

    def plans(self) -> list[DiagPlan]:
        for path, m in self.overrides.items():
            if m.signal not in self.by_id:
                self.problems.append(f'{self.where}: [signals] "{path}": the signal set has no signal "{m.signal}"')
        targets = self._targets()
        out: list[DiagPlan] = []
        by_key: dict[str, int] = {}
        for index, cmd in enumerate(self.sset.commands):
            plan = self._plan(index, cmd, targets)
            if plan is None:
                continue
            first = by_key.setdefault(plan.key, index)
            if first != index and cmd.filter is not None and self.sset.commands[first].filter is not None:
                self.problems.append(f"{self.where}: commands #{first + 1} and #{index + 1} ask the same request "
                                     f"({plan.key}) for different model years (filter): set [vehicle] model_year")
                continue
            out.append(plan)
        return out

    def _targets(self) -> dict[str, list[tuple[str | None, SignalMap | None]]]:
        """Signal id -> the (VSS path, mapping) pairs it feeds."""
        taken: dict[str, str] = {}
        targets: dict[str, list[tuple[str | None, SignalMap | None]]] = {}
        for over, m in self.overrides.items():
            targets.setdefault(m.signal, []).append((over, m))
            taken[over] = m.signal
        for cmd in self.sset.commands:
            for s in cmd.signals:
                metric = SUGGESTED_METRICS.get(s.suggestedMetric or "")
                if metric is None:
                    continue
                path = metric
                first = taken.get(path)
                if first is None:
                    taken[path] = s.id
                    targets.setdefault(s.id, []).append((path, None))
                elif path in vss.BOOLEAN_PATHS and self._same_command(first, s.id) and path not in self.overrides:
                    targets.setdefault(s.id, []).append((path, None))  # OR'ed with the first (see _value)
                elif path not in self.overrides:
                    self.notes.append(f'{self.where}: "{s.id}" also suggests {s.suggestedMetric}: "{path}" '
                                      f'comes from "{first}" (map it in [signals] as "signalset.{s.id}" to choose)')
        return targets

    def _same_command(self, a: str, b: str) -> bool:
        return self.by_id[a][0] is self.by_id[b][0]

    def _plan(self, index: int, cmd: ObdbCommand, targets: dict[str, list[tuple[str | None, SignalMap | None]]]) -> DiagPlan | None:
        where = f"{self.where}: command #{index + 1} ({cmd.hdr} {cmd.cmd})"
        if len(cmd.cmd) != 1:
            self.problems.append(f"{where}: cmd must hold one service, got {len(cmd.cmd)}")
            return None
        (svc_text, ident_text), = cmd.cmd.items()
        try:
            service, ident = int(svc_text, 16), bytes.fromhex(ident_text)
        except ValueError:
            self.problems.append(f"{where}: cmd {cmd.cmd}: not hexadecimal")
            return None
        problem = service_problem(service)
        if problem is not None:
            self.problems.append(f"{where}: {problem}")
            return None
        if len(ident) != IDENTIFIER_BYTES[service]:
            self.problems.append(f"{where}: service {svc_text} takes {IDENTIFIER_BYTES[service]} identifier "
                                 f"byte(s), got {ident_text!r}")
            return None
        tx, ext = _can_id(cmd.hdr)
        if cmd.rax is not None:
            rx, rx_ext = _can_id(cmd.rax)
            rx_ids, ext = frozenset({rx}), ext or rx_ext
        elif tx == FUNCTIONAL_ID:
            rx_ids = frozenset(OBD_RESPONSE_IDS)
        elif 0x7E0 <= tx <= 0x7E7:
            rx_ids = frozenset({tx + 8})
        else:
            self.problems.append(f"{where}: no rax (response id) for request id {cmd.hdr}")
            return None
        p = self.diag.periods
        periods = {"driving": max(cmd.freq, p.driving) if p.driving else 0.0,
                   "charging": max(cmd.freq, p.charging) if p.charging else 0.0,
                   "parked": max(cmd.freq, p.parked) if p.parked else 0.0}
        key = f"{tx:X}.{service:02X}{ident.hex().upper()}"
        plan = DiagPlan(key=key, label=key, tx_id=tx, rx_ids=rx_ids, extended=ext,
                        request=bytes([service]) + ident, periods=periods,
                        functional=tx == FUNCTIONAL_ID, source=where)
        for s in cmd.signals:
            feeds = targets.get(s.id) or [(None, None)]
            for path, mapping in feeds:
                value = self._value(f"{where}, signal {s.id}", s, path, mapping)
                if value is not None:
                    plan.values.append(value)
        _merge_bools(plan)
        return plan

    def _value(self, where: str, s: ObdbSignal, path: str | None, m: SignalMap | None) -> DiagValue | None:
        f = s.fmt
        if f.blsb and f.len > 8 and (f.bix % 8 or f.len % 8):
            self.problems.append(f"{where}: little-endian (blsb) values must be whole bytes")
            return None
        unit = f.unit or "scalar"
        kind = "enum" if f.map else ("bool" if unit in BOOL_UNITS or (path in vss.BOOLEAN_PATHS) else "number")
        v = DiagValue(key=s.id, path=path, spec=BitSpec(f.bix, f.len, f.sign, f.blsb and f.len > 8),
                      kind=kind, scale=f.mul / f.div, offset=f.add, src_min=f.min, src_max=f.max,
                      null_min=f.nullmin, null_max=f.nullmax, unit=unit,
                      choices={int(k): e.value for k, e in f.map.items() if k.isdigit()} if f.map else None,
                      ndigits=ndigits(f.mul / f.div))
        if path is None:
            return v
        if kind == "bool" and m is not None and m.true_values is not None:
            v.true_raw = frozenset(int(x) for x in m.true_values if isinstance(x, int))
        if kind == "number":
            if not self._convert(where, v, path, unit):
                return None
            if m is not None:
                v.map_offset = v.map_offset * m.scale + m.offset
                v.map_scale *= m.scale
            v.ndigits = ndigits(v.scale * v.map_scale)
        lo, hi = vss.PLAUSIBLE.get(path, (None, None))
        v.lo = m.min if m is not None and m.min is not None else lo
        v.hi = m.max if m is not None and m.max is not None else hi
        return v

    def _convert(self, where: str, v: DiagValue, path: str, unit: str) -> bool:
        want = VSS_UNITS.get(path)
        if want is None or want == unit or unit == "scalar":
            return True
        conv = CONVERSIONS.get((unit, want))
        if conv is None:
            self.problems.append(f'{where}: unit "{unit}" cannot be converted to "{want}", the unit of {path}')
            return False
        v.map_scale, v.map_offset = conv
        return True


def _merge_bools(plan: DiagPlan) -> None:
    """Several boolean signals of one response feeding one path: true when any of them is."""
    first: dict[str, DiagValue] = {}
    kept: list[DiagValue] = []
    for v in plan.values:
        head = first.get(v.path or "") if v.kind == "bool" and v.path else None
        if head is None:
            if v.kind == "bool" and v.path:
                first[v.path] = v
            kept.append(v)
        else:
            head.any_of = (*head.any_of, v.spec)
            kept.append(DiagValue(key=v.key, path=None, spec=v.spec, kind="bool"))  # still decoded
    plan.values = kept
