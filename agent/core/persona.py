"""The persona: events -> short first-person messages from the car, from locale catalogs (reads catalogs once)."""

from __future__ import annotations

import math
import re
import string
import tomllib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.core.errors import ConfigError
from agent.core.i18n import format_clock, format_number, format_when, local
from agent.core.model import PersonaMessage, iso_utc, message_id
from agent.core.rules import Event
from agent.core.settings import AgentConfig

SHIPPED_CATALOGS = Path(__file__).parent / "catalogs"
FALLBACK_LOCALE = "en"
# Every kind the agent can say; a catalog must have each (check-config says which are missing).
KINDS = (
    "battery.low", "battery.critical", "battery.hot", "charge.started", "charge.started.no_eta",
    "charge.started.no_question",
    "charge.completed", "charge.interrupted", "aux_battery.low", "service.due", "dtc.new",
    "charge.scheduled", "digest", "digest.suppressed", "summary.daily", "summary.daily.charging",
    "reminder.plug_in", "charge.offpeak_question",
)
QUESTIONS: dict[str, list[str]] = {"charge.started": ["ok", "later"], "service.due": ["yes", "no"],
                                   "charge.offpeak_question": ["yes", "no"]}
TIME_FIELDS = ("eta", "since", "started_at")
_DOUBLE_STOP = re.compile(r"\.\.(?=\s|$)")


@dataclass(frozen=True)
class Catalog:
    locale: str
    signature: str
    kinds: dict[str, dict[str, list[str]]]
    source: Path

    @classmethod
    def load(cls, path: Path) -> Catalog:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read message catalog: {exc}") from None
        kinds = raw.get("kinds", {})
        problems = [
            f'{path}: [kinds."{kind}"] {tone}: must be a non-empty list of texts'
            for kind, tones in kinds.items() for tone, texts in tones.items()
            if not (isinstance(texts, list) and texts and all(isinstance(t, str) for t in texts))
        ]
        if problems:
            raise ConfigError(problems)
        return cls(str(raw.get("locale", path.stem)), str(raw.get("signature", "")), kinds, path)

    def texts(self, kind: str, tone: str) -> list[str] | None:
        tones = self.kinds.get(kind)
        if not tones:
            return None
        return tones.get(tone) or tones.get("friendly") or next(iter(tones.values()))


class _Fields(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "?"


class Persona:
    """Renders events as PersonaMessages in the vehicle's locale, falling back to English."""

    def __init__(self, config: AgentConfig, catalog: Catalog | None, fallback: Catalog) -> None:
        self.config = config
        self.vehicle = config.vehicle
        self.catalog = catalog
        self.fallback = fallback

    @classmethod
    def from_config(cls, config: AgentConfig) -> Persona:
        directory = config.messages.catalog_dir or SHIPPED_CATALOGS
        fallback_path = directory / f"{FALLBACK_LOCALE}.toml"
        if not fallback_path.exists():
            fallback_path = SHIPPED_CATALOGS / f"{FALLBACK_LOCALE}.toml"
        fallback = Catalog.load(fallback_path)
        wanted = directory / f"{config.vehicle.locale}.toml"
        if config.vehicle.locale == FALLBACK_LOCALE and wanted == fallback_path:
            return cls(config, fallback, fallback)
        if not wanted.exists():
            raise ConfigError(f"{config.source}: [vehicle] locale: no message catalog {wanted}")
        return cls(config, Catalog.load(wanted), fallback)

    def missing_kinds(self) -> list[str]:
        catalog = self.catalog
        if catalog is None:
            return []
        return [f'[vehicle] locale "{catalog.locale}": {catalog.source} has no texts for "{k}"'
                f" (English is used)" for k in KINDS if catalog.texts(k, self.vehicle.tone) is None]

    def render(self, event: Event) -> PersonaMessage:
        msg_id = message_id(self.vehicle.id, event.kind, event.ts) if not event.key else \
            message_id(self.vehicle.id, f"{event.kind}/{event.key}", event.ts)
        visibility = event.data.get("visibility") if event.kind == "digest" else None
        visibility = visibility or self.config.messages.visibility.get(event.kind, "private")
        # What family or the public may see: the allowlisted data only, for the text as well.
        data = event.data if visibility == "private" else redact(event.data, visibility)
        shown = Event(event.kind, event.ts, event.severity, data, event.key)
        catalog, texts = self._texts(_text_kind(shown))
        fields = self._fields(shown, catalog.locale)
        usable = [t for t in texts if _placeholders(t) <= set(fields)] or texts
        template = usable[int(msg_id.replace("-", "")[:8], 16) % len(usable)]
        text = _DOUBLE_STOP.sub(".", template.format_map(fields))  # "2:15 a.m.." -> "2:15 a.m."
        if catalog.signature:
            text = f"{text} {catalog.signature.format_map(fields)}"
        return PersonaMessage(
            id=msg_id, vehicle_id=self.vehicle.id, ts=iso_utc(event.ts), kind=event.kind,
            severity=event.severity, visibility=visibility, text=text, locale=catalog.locale,
            persona=self.vehicle.persona, question=QUESTIONS.get(_text_kind(shown)), data=_wire_data(data))

    def unsigned(self, text: str) -> str:
        """A message's text without the persona's signature (for the digest)."""
        for catalog in (self.catalog, self.fallback):
            if catalog is not None and catalog.signature:
                sig = " " + catalog.signature.format_map(_Fields(persona=self.vehicle.persona))
                if text.endswith(sig):
                    return text[: -len(sig)]
        return text

    def _texts(self, kind: str) -> tuple[Catalog, list[str]]:
        for catalog in (self.catalog, self.fallback):
            if catalog is not None:
                texts = catalog.texts(kind, self.vehicle.tone)
                if texts:
                    return catalog, texts
        raise KeyError(f"no catalog has texts for {kind!r}")

    def _fields(self, event: Event, locale: str) -> _Fields:
        d = event.data
        f = _Fields(persona=self.vehicle.persona)
        if isinstance(d.get("soc"), int | float):
            # Like the dashboard: 19.9 % reads 19 %, never a rounded-up 20 % in a "below 20" message.
            f["soc"] = format_number(math.floor(d["soc"]), locale, 0)
        for key, name, decimals in NUMBER_FIELDS:
            if isinstance(d.get(key), int | float) and not isinstance(d.get(key), bool):
                f[name] = format_number(d[key], locale, decimals)
        for key in ("code", "items"):
            if isinstance(d.get(key), str):
                f[key] = d[key]
        if isinstance(d.get("start"), str) and ":" in d["start"]:
            hh, mm = d["start"].split(":")
            f["start"] = format_clock(datetime(2000, 1, 1, int(hh), int(mm)), locale)
        if isinstance(d.get("eta"), float | int):
            zone = self.vehicle.timezone
            clock, day = format_when(local(d["eta"], zone), local(event.ts, zone), locale)
            f["eta"] = clock
            f["eta_day"] = (f" {day}" if day else "") if locale != "ja" else day
        return f


# (data key, placeholder, decimals)
NUMBER_FIELDS = (
    ("limit", "limit", 0), ("voltage_v", "voltage", 1), ("temperature_c", "temperature", 0),
    ("distance_km", "distance", 0), ("added_kwh", "added_kwh", 1), ("days", "days", 0),
    ("energy_used_kwh", "energy_used", 1), ("charged_kwh", "charged", 1), ("count", "count", 0),
    ("suppressed", "suppressed", 0),
)


def _text_kind(event: Event) -> str:
    """The catalog entry: some kinds have variants by what the data holds."""
    d = event.data
    if event.kind == "charge.started" and "eta" not in d:
        return "charge.started.no_eta"
    if event.kind == "charge.started" and d.get("offpeak_asked"):
        return "charge.started.no_question"
    if event.kind == "digest" and d.get("suppressed"):
        return "digest.suppressed"
    if event.kind == "summary.daily" and "eta" in d:
        return "summary.daily.charging"
    return event.kind


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


# The data family and the public may see; everything else (odometer, VIN, location, any field
# not listed) is removed from data and never reaches the text.
SHARE_ALLOW: dict[str, frozenset[str]] = {
    "public": frozenset({"soc", "limit", "eta", "added_kwh", "count", "start", "items", "visibility"}),
    "family": frozenset({"soc", "limit", "eta", "eta_source", "added_kwh", "voltage_v", "temperature_c",
                         "days", "distance_km", "code", "count", "items", "suppressed", "kinds", "start",
                         "started_at", "since", "power_kw", "energy_used_kwh", "charged_kwh", "held_ids",
                         "active", "reason", "visibility"}),
}


def redact(data: dict[str, Any], visibility: str) -> dict[str, Any]:
    allow = SHARE_ALLOW.get(visibility, frozenset())
    return {k: v for k, v in data.items() if k in allow}


def _wire_data(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (iso_utc(v) if k in TIME_FIELDS and isinstance(v, int | float) else v) for k, v in data.items()}
