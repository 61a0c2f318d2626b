"""Scenario files: pydantic models for simulators/scenarios/*.toml and their loading (reads files)."""

from __future__ import annotations

import re
import tomllib
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agent.core.errors import ConfigError

SCENARIO_DIR = Path(__file__).parent / "scenarios"
_DTC_RE = re.compile(r"^[PCBU][0-3][0-9A-F]{3}$")
_HHMM_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")

Pct = Annotated[float, Field(ge=0, le=100)]
NonNeg = Annotated[float, Field(ge=0)]


class _Model(BaseModel):
    # A typo'd key is an error, never a silently ignored default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class CarSetup(_Model):
    """The car at the scenario's start, and its fixed parameters."""

    capacity_kwh: Annotated[float, Field(gt=0, le=300)] = 64.0
    soc_pct: Pct = 50.0
    charge_limit_pct: Annotated[int, Field(ge=50, le=100)] = 90
    consumption_kwh_per_km: Annotated[float, Field(gt=0, le=1)] = 0.16
    ac_max_kw: Annotated[float, Field(gt=0, le=22)] = 11.0
    dc_max_kw: Annotated[float, Field(gt=0, le=350)] = 150.0
    odometer_km: NonNeg = 12000.0
    days_to_service: Annotated[float, Field(ge=-3650, le=3650)] = 300.0
    km_to_service: Annotated[float, Field(ge=-100000, le=100000)] = 15000.0
    aux_soc_pct: Pct = 85.0
    aux_capacity_ah: Annotated[float, Field(gt=0)] = 45.0
    # Quiescent current of the parked car (alarm, telematics, keyless entry).
    parasitic_drain_a: NonNeg = 0.03
    ambient_c: Annotated[float, Field(ge=-40, le=60)] = 15.0
    pack_temp_c: Annotated[float, Field(ge=-40, le=60)] = 18.0
    cabin_temp_c: Annotated[float, Field(ge=-40, le=80)] | None = None
    climate_on: bool = False
    climate_target_c: Annotated[float, Field(ge=16, le=32)] = 22.0
    schedule: Literal["off", "once", "daily"] = "off"
    schedule_start: str = "00:00"
    # Standard deviation of the noise on the displayed SOC, in percentage points.
    soc_noise_pct: NonNeg = 0.0

    @field_validator("schedule_start")
    @classmethod
    def _hhmm(cls, value: str) -> str:
        if not _HHMM_RE.match(value):
            raise ValueError(f"expected local time of day HH:MM, got {value!r}")
        return value

    @property
    def schedule_start_min(self) -> int:
        hours, minutes = self.schedule_start.split(":")
        return int(hours) * 60 + int(minutes)


class Phase(_Model):
    """One stretch of the day: parked, driving, charging, sitting with accessories on, ready."""

    kind: Literal["park", "drive", "charge", "accessory", "ready"]
    # drive, park, accessory, ready: how long; charge: the most it may take.
    duration_s: Annotated[float, Field(gt=0)] | None = None
    speed_kmh: Annotated[float, Field(ge=0, le=250)] = 50.0
    # drive: stop driving once the true SOC falls below this.
    until_soc_pct: Pct | None = None
    charger: Literal["ac", "dc"] = "ac"
    power_kw: Annotated[float, Field(gt=0, le=350)] | None = None
    # charge: unplug this long after the charger reports COMPLETE.
    unplug_after_s: NonNeg = 120.0
    # Extra 12 V load (blower, lights, audio) on top of the car's own in this phase.
    aux_load_a: NonNeg = 0.0
    soc_noise_pct: NonNeg | None = None
    climate: bool | None = None
    climate_target_c: Annotated[float, Field(ge=16, le=32)] | None = None

    @model_validator(mode="after")
    def _bounded(self) -> Phase:
        if self.kind != "charge" and self.duration_s is None and self.until_soc_pct is None:
            raise ValueError(f"a {self.kind!r} phase needs duration_s")
        return self


class TimedEvent(_Model):
    """Something that happens at a fixed offset from the start: a DTC set or cleared."""

    at_s: NonNeg
    dtc: str
    status: Literal["ACTIVE", "PENDING", "INACTIVE", "CLEARED"] = "ACTIVE"

    @field_validator("dtc")
    @classmethod
    def _sae(cls, value: str) -> str:
        if not _DTC_RE.match(value):
            raise ValueError(f"expected an SAE J2012 code like 'P0A80', got {value!r}")
        return value


class Garbage(_Model):
    """Noise on the bus, rates per simulated second."""

    unknown_ids_per_s: NonNeg = 0.0
    wrong_dlc_per_s: NonNeg = 0.0
    error_frames_per_s: NonNeg = 0.0
    remote_frames_per_s: NonNeg = 0.0
    burst_every_s: Annotated[float, Field(gt=0)] | None = None
    burst_frames: Annotated[int, Field(ge=1, le=10000)] = 200


class Scenario(_Model):
    description: str
    start: datetime
    timezone: str | None = None
    car: CarSetup = CarSetup()
    phases: Annotated[list[Phase], Field(min_length=1)]
    events: list[TimedEvent] = Field(default_factory=list)
    garbage: Garbage | None = None
    # "diagnostics-only": the OBD port's gateway passes no broadcast frames, only the ECUs'
    # network-management heartbeat while the car is awake; values come from diagnostic polling.
    gateway: Literal["broadcast", "diagnostics-only"] = "broadcast"
    # The agent events (kinds) a replay of this scenario yields, in order, each once.
    expect_events: list[str] = Field(default_factory=list)
    name: str = Field(default="", exclude=True)

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("start needs a UTC offset, e.g. 2026-11-21T18:30:00+09:00")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @property
    def tz(self) -> tzinfo:
        """The car's clock zone: `timezone`, else the fixed offset of `start`."""
        if self.timezone:
            return ZoneInfo(self.timezone)
        offset = self.start.utcoffset() or timedelta(0)
        return timezone(offset)

    @property
    def start_ts(self) -> float:
        return self.start.timestamp()


def dtc_number(code: str) -> int:
    """SAE J2012 text to the 16-bit DTC the DBC carries: P0A80 -> 0x0A80."""
    system = "PCBU".index(code[0])
    return (system << 14) | (int(code[1]) << 12) | int(code[2:], 16)


def list_scenarios() -> dict[str, str]:
    """Scenario name -> one-line description, sorted by name."""
    out: dict[str, str] = {}
    for path in sorted(SCENARIO_DIR.glob("*.toml")):
        out[path.stem] = load_scenario(path).description
    return out


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name, or a scenario file by path. Raises ConfigError."""
    path = _find(name_or_path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read scenario: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([f"{path}: {_describe(err)}" for err in exc.errors()]) from None
    return scenario.model_copy(update={"name": path.stem})


def _find(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text:
        return Path(text)
    path = SCENARIO_DIR / f"{text}.toml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(SCENARIO_DIR.glob("*.toml")))
        raise ConfigError(f"unknown scenario {text!r} (known: {known})")
    return path


def _describe(err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    value = err.get("input")
    shown = "" if isinstance(value, dict) or err["type"] == "missing" else f" (got {value!r})"
    return f"{loc}: {err['msg']}{shown}"
