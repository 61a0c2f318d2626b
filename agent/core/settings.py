"""The configuration's models: every section, key, type, range and default (no IO).

Loading a file (TOML, environment overrides, secrets, relative paths) is agent.profile.config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from agent.core.diag_profile import DiagnosticsConfig

Severity = Literal["info", "warning", "critical"]
Visibility = Literal["private", "family", "public"]


class _Model(BaseModel):
    # A typo'd key is an error, never a silently ignored default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class VehicleConfig(_Model):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    persona: str = "your car"
    locale: str = "en"
    timezone: str = "UTC"
    tone: Literal["friendly", "concise"] = "friendly"
    battery_capacity_kwh: Annotated[float, Field(gt=0, le=500)] = 60.0
    # The model year: picks the OBDb signal set's commands for that year (their `filter` and
    # `dbgfilter`); None: every command of the set (docs/diagnostics.md).
    model_year: Annotated[int, Field(ge=1980, le=2100)] | None = None
    # Cheaper power, local time "HH:MM-HH:MM" (e.g. "23:00-07:00"); enables "later" answers.
    offpeak_window: Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")] | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name like 'Europe/Berlin')") from exc
        return value


class CanConfig(_Model):
    interface: str = "socketcan"
    channel: str | None = "vcan0"
    bitrate: int | None = None
    # CAN FD: receive (and send) FD frames of up to 64 bytes (SocketCAN's CAN_RAW_FD_FRAMES;
    # python-can's `fd` for other interfaces, which take the data rate in options).
    fd: bool = False
    dbc: list[Path] = Field(default_factory=list)
    strict_dbc: bool = False
    # Extra keyword arguments for python-can's Bus (e.g. tty_baudrate for slcan).
    options: dict[str, Any] = Field(default_factory=dict)
    # A value not refreshed for this long is stale; unset: 3x the message's GenMsgCycleTime
    # (at least 2 s), or 10 s when the DBC gives no cycle time. Per signal: stale_after_s.
    stale_after_s: Annotated[float, Field(gt=0)] | None = None
    # Reopen the bus after it disappears (adapter unplugged, link down).
    reconnect_s: Annotated[float, Field(gt=0)] = 2.0
    # A purely passive agent: nothing is ever sent on the bus (no polls, no commands), enforced
    # by the bus wrapper (agent/io/guarded_bus.py), whose send raises.
    listen_only: bool = False


class SignalMap(_Model):
    """How one VSS path is read from one DBC signal."""

    source: Annotated[str, Field(pattern=r"^[^.\s]+\.[^.\s]+$")]
    true_values: list[str | int] | None = None
    scale: float = 1.0
    offset: float = 0.0
    # Plausibility limits in VSS units; values outside are dropped (the DBC's own min/max apply too).
    min: float | None = None
    max: float | None = None
    stale_after_s: Annotated[float, Field(gt=0)] | None = None
    # For Vehicle.Diagnostics.DTCList: the status signal and which of its values mean "active".
    status: Annotated[str, Field(pattern=r"^[^.\s]+\.[^.\s]+$")] | None = None
    active_values: list[str | int] | None = None

    @property
    def message(self) -> str:
        return self.source.split(".", 1)[0]

    @property
    def signal(self) -> str:
        return self.source.split(".", 1)[1]


class ThresholdRule(_Model):
    enabled: bool = True
    threshold: float
    rearm: float
    for_s: Annotated[float, Field(ge=0)] = 0.0
    severity: Severity = "warning"


class BatteryLowRule(ThresholdRule):
    threshold: float = 20.0  # SOC %, below
    rearm: float = 25.0
    severity: Severity = "warning"


class BatteryCriticalRule(ThresholdRule):
    threshold: float = 10.0
    rearm: float = 15.0
    severity: Severity = "critical"


class BatteryHotRule(ThresholdRule):
    threshold: float = 50.0  # pack °C, above
    rearm: float = 45.0
    for_s: Annotated[float, Field(ge=0)] = 5.0
    severity: Severity = "critical"


class AuxBatteryLowRule(ThresholdRule):
    threshold: float = 11.8  # 12 V rail, below, continuously for for_s
    rearm: float = 12.4
    for_s: Annotated[float, Field(ge=0)] = 60.0
    severity: Severity = "warning"


class ChargingRules(_Model):
    enabled: bool = True
    # Charging must hold this long before charge.started is sent, so the ETA rests on real power.
    settle_s: Annotated[float, Field(ge=0)] = 20.0
    # Charging must be off this long before it counts as stopped (glitches are not a stop).
    stop_debounce_s: Annotated[float, Field(ge=0)] = 10.0
    # Stopped within this many points of the limit counts as completed.
    complete_margin_pct: Annotated[float, Field(ge=0, le=10)] = 1.5
    taper_start_pct: Annotated[float, Field(gt=0, le=100)] = 80.0
    # Power at 100 % as a share of power below the taper start.
    taper_floor: Annotated[float, Field(gt=0, le=1)] = 0.3
    max_eta_h: Annotated[float, Field(gt=0)] = 72.0


class ServiceRules(_Model):
    enabled: bool = True
    days: Annotated[float, Field(ge=0)] = 14.0
    distance_km: Annotated[float, Field(ge=0)] = 1000.0
    severity: Severity = "info"


class DtcRules(_Model):
    enabled: bool = True
    severity: Severity = "warning"
    # A code not broadcast as active for this long counts as cleared.
    clear_after_s: Annotated[float, Field(gt=0)] = 30.0
    # Codes (or prefixes, e.g. "P0AA6" insulation fault, "P0A" the HV system) that are critical:
    # their dtc.new is sent at once, through quiet hours and caps.
    critical_codes: list[Annotated[str, Field(pattern=r"^[PCBU][0-9A-F]{0,4}")]] = Field(default_factory=list)


class RulesConfig(_Model):
    battery_low: BatteryLowRule = BatteryLowRule()
    battery_critical: BatteryCriticalRule = BatteryCriticalRule()
    battery_hot: BatteryHotRule = BatteryHotRule()
    aux_battery_low: AuxBatteryLowRule = AuxBatteryLowRule()
    charging: ChargingRules = ChargingRules()
    service_due: ServiceRules = ServiceRules()
    dtc_new: DtcRules = DtcRules()


class TlsConfig(_Model):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False


class MqttConfig(_Model):
    # No host: `run` keeps working offline (messages only logged); `demo` starts its own broker.
    host: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    client_id: str | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    # Cellular links: a long keepalive saves data; NAT timeouts are rarely under 5 minutes.
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 120
    # Reconnect backoff: doubling from ~1-3 s (random per outage, so a fleet does not reconnect
    # in lockstep after a broker restart) up to this.
    reconnect_max_s: Annotated[float, Field(ge=1)] = 120.0
    topic_prefix: str = "carfriend/v1"
    qos: Literal[0, 1, 2] = 1
    tls: TlsConfig | None = None
    # The state topic: changed signals (past their deadband) at most every state_min_interval_s;
    # a full retained snapshot on connect and every state_interval_s.
    state_min_interval_s: Annotated[float, Field(ge=0)] = 5.0
    state_interval_s: Annotated[float, Field(gt=0)] = 900.0
    # Per VSS path, in its unit; built-in defaults for the usual signals (agent/statepub.py).
    state_deadbands: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)


HHMM = r"([01]\d|2[0-3]):[0-5]\d"


class MessagesConfig(_Model):
    visibility: dict[str, Visibility] = Field(default_factory=dict)
    # Local "HH:MM-HH:MM": non-critical unsolicited messages are held and sent as one digest
    # when it ends. Off unless set.
    quiet_hours: Annotated[str, Field(pattern=f"^{HHMM}-{HHMM}$")] | None = None
    # Kinds that go through quiet hours anyway (critical ones always do).
    quiet_hours_urgent: list[str] = Field(default_factory=lambda: ["aux_battery.low"])
    # Per kind: at most one message per this many seconds (the rest are counted as suppressed).
    rate_limit_s: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    # At most this many non-critical unsolicited messages a local day.
    daily_cap: Annotated[int, Field(ge=1)] | None = 30
    # Local "HH:MM" of an optional daily summary (distance, energy used and charged, next ETA).
    daily_summary: Annotated[str, Field(pattern=f"^{HHMM}$")] | None = None
    # Local "HH:MM" of an evening reminder when SOC is below plug_in_below_pct and not plugged in.
    plug_in_reminder: Annotated[str, Field(pattern=f"^{HHMM}$")] | None = None
    plug_in_below_pct: Annotated[float, Field(ge=0, le=100)] = 40.0
    # Your own catalogs (one <locale>.toml per language); the shipped ones when unset.
    catalog_dir: Path | None = None


class CommandFrame(_Model):
    """How one command becomes a CAN frame of the vehicle's DBC, and how the car confirms it."""

    message: str
    # Signal -> value: a number, a choice name, or "{arg}" for a command argument.
    signals: dict[str, str | int | float] = Field(default_factory=dict)
    # VSS path -> the value that confirms the command (or "{arg}").
    confirm: dict[str, str | int | float | bool] = Field(default_factory=dict)


class CommandsConfig(_Model):
    # Commands this vehicle accepts; unset: every command it has frames for, plus reply,
    # status.request and ping.
    allowlist: list[str] | None = None
    # The HMAC key: systemd credential "command-key", else this file, else $CARFRIEND_COMMAND_KEY.
    # Never the key itself in this file.
    key_file: Path | None = None
    window_s: Annotated[float, Field(gt=0)] = 120.0
    skew_s: Annotated[float, Field(ge=0)] = 30.0
    rate_per_minute: Annotated[int, Field(ge=1)] = 10
    confirm_timeout_s: Annotated[float, Field(gt=0)] = 15.0
    # The safety interlock trusts speed and gear only this fresh (a valid reading within this
    # many seconds, and no "not available" reading since), whatever the signals' stale_after_s.
    interlock_max_age_s: Annotated[float, Field(gt=0, le=60)] = 3.0
    max_payload_bytes: Annotated[int, Field(ge=256, le=65536)] = 4096
    frames: dict[str, CommandFrame] = Field(default_factory=dict)


class DealerConfig(_Model):
    """What service.due sends on dealer/appointment (the relay decides which dealer gets it)."""

    enabled: bool = True
    dealer_id: str | None = None
    # The owner's preferred slots, free text the dealer reads, e.g. "Sat 09:00-12:00".
    preferred_slots: list[str] = Field(default_factory=list)


class StorageConfig(_Model):
    state_dir: Path | None = None
    # The outbox's cap while offline: beyond it the oldest info, then warning, messages go
    # (counted and reported); critical ones are never dropped. ~1 kB each on disk.
    outbox_max_messages: Annotated[int, Field(ge=100)] = 100_000


class HomeAssistantConfig(_Model):
    """Home Assistant MQTT discovery (docs/homeassistant.md): one device per vehicle, off unless enabled."""

    enabled: bool = False
    # Home Assistant's `discovery_prefix` (its MQTT integration setting): one or more topic levels.
    discovery_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$", max_length=128)] = \
        "homeassistant"


class HealthConfig(_Model):
    """The periodic `health` document (docs/topics.md): counters, bus, outbox, process."""

    enabled: bool = True
    # ~0.7 kB a document: every 5 minutes is ~6 MB a month on a cellular link.
    interval_s: Annotated[float, Field(ge=5, le=86400)] = 300.0


class AgentConfig(_Model):
    vehicle: VehicleConfig
    can: CanConfig = CanConfig()
    signals: dict[str, str | SignalMap] = Field(default_factory=dict)
    rules: RulesConfig = RulesConfig()
    mqtt: MqttConfig = MqttConfig()
    messages: MessagesConfig = MessagesConfig()
    storage: StorageConfig = StorageConfig()
    commands: CommandsConfig = CommandsConfig()
    dealer: DealerConfig = DealerConfig()
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    health: HealthConfig = HealthConfig()
    diagnostics: DiagnosticsConfig | None = None  # diagnostic polling (docs/diagnostics.md)
    # Where this config was read from; every relative path above was resolved against it.
    source: Path | None = Field(default=None, exclude=True)

    def mappings(self) -> dict[str, SignalMap]:
        """Every VSS path with its mapping in table form."""
        return {
            path: SignalMap(source=m) if isinstance(m, str) else m for path, m in self.signals.items()
        }

    def topic(self, leaf: str) -> str:
        return f"{self.mqtt.topic_prefix}/{self.vehicle.id}/{leaf}"

    def resolved_state_dir(self) -> Path:
        if self.storage.state_dir is not None:
            return self.storage.state_dir
        systemd_dir = os.environ.get("STATE_DIRECTORY")  # set by systemd's StateDirectory=
        if systemd_dir:
            return Path(systemd_dir.split(":")[0])
        return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local/state")) / "carfriend"
