"""The configuration file: TOML loading, environment overrides, secrets, relative paths (reads files)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.core.errors import ConfigError
from agent.core.settings import AgentConfig

ENV_PREFIX = "CARFRIEND_"


def load_config(path: Path | str, *, dbc_override: list[Path] | None = None,
                environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Read, override from the environment, validate and resolve a config file.

    Raises ConfigError listing every problem found in the file itself; DBC and mapping checks
    are done by ``agent.vehicle.load_vehicle``.
    """
    path = Path(path)
    raw = _read_toml(path)
    apply_env_overrides(raw, os.environ if environ is None else environ)
    if dbc_override:
        raw.setdefault("can", {})["dbc"] = [str(Path(p).absolute()) for p in dbc_override]
    try:
        config = AgentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([f"{path}: {_describe(err)}" for err in exc.errors()]) from None
    return _resolve_paths(config, path)


def load_mapping_part(path: Path | str, *, dbc_override: list[Path] | None = None,
                      environ: Mapping[str, str] | None = None) -> AgentConfig | None:
    """The [can] section and the valid [signals] of a config that does not validate as a whole.

    For check-config, which then checks the mapping against the DBCs in the same run; None when
    [can] itself (the DBC list) is invalid. Everything else is left at its defaults.
    """
    path = Path(path)
    raw = _read_toml(path)
    apply_env_overrides(raw, os.environ if environ is None else environ)
    if dbc_override:
        raw.setdefault("can", {})["dbc"] = [str(Path(p).absolute()) for p in dbc_override]
    signals = raw.get("signals")
    good = {k: v for k, v in signals.items() if _valid_signal(k, v)} if isinstance(signals, dict) else {}
    if "diagnostics" in raw:  # polled signals are checked with [diagnostics], which is invalid here
        if not raw.get("can", {}).get("dbc"):
            return None
        good = {k: v for k, v in good.items() if not str(v.get("source", "") if isinstance(v, dict) else v)
                .startswith("signalset.")}
    try:
        config = AgentConfig.model_validate({"vehicle": {"id": "check-config"}, "can": raw.get("can", {}),
                                             "signals": good})
    except ValidationError:
        return None
    return _resolve_paths(config, path)


def _valid_signal(path: str, mapping: Any) -> bool:
    try:
        AgentConfig.model_validate({"vehicle": {"id": "check-config"}, "signals": {path: mapping}})
    except ValidationError:
        return False
    return True


def credential(name: str) -> Path | None:
    """A systemd credential (LoadCredential=name:...) of this service, if it has one."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    path = Path(directory) / name if directory else None
    return path if path is not None and path.is_file() else None


def read_secret(name: str, inline: str | None, file: Path | None) -> tuple[str | None, str]:
    """A secret and where it came from: systemd credential `name`, else `file`, else `inline`
    (a config or environment value). The secret is never part of an error message."""
    for path in (credential(name), file):
        if path is not None:
            try:
                return path.read_text().strip(), str(path)
            except OSError as exc:
                raise ConfigError(f"{path}: cannot read {name}: {exc.strerror or exc}") from None
    return inline, "the environment or config"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Apply CARFRIEND_<SECTION>__<KEY>[__<KEY>...] variables onto the raw TOML tree."""
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name or name.startswith("CARFRIEND_RELAY_"):
            continue  # CARFRIEND_RELAY_*: the relay's own settings
        keys = [k.lower() for k in name[len(ENV_PREFIX):].split("__")]
        node = raw
        for key in keys[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        node[keys[-1]] = _env_value(text)


def _env_value(text: str) -> Any:
    """A TOML literal when it parses as one (numbers, booleans, arrays), the plain string
    otherwise; empty means unset (TOML has no null), e.g. CARFRIEND_VEHICLE__OFFPEAK_WINDOW=."""
    if text == "":
        return None
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _describe(err: Any) -> str:
    loc = [str(p) for p in err["loc"]]
    # pydantic reports union branches as extra loc parts ("str", "SignalMap"); drop them.
    loc = [p for p in loc if p not in ("str", "SignalMap") and not p.startswith("function-")]
    where = _format_loc(loc)
    value = err.get("input")
    shown = "" if isinstance(value, dict) or err["type"] == "missing" else f" (got {value!r})"
    if "password" in where:
        shown = ""  # never echo a secret
    return f"{where}: {err['msg']}{shown}"


def _format_loc(loc: list[str]) -> str:
    if not loc:
        return "(top level)"
    section, rest = loc[0], loc[1:]
    if not rest:
        return f"[{section}]"
    keys = ".".join(f'"{k}"' if "." in k else k for k in rest)
    return f"[{section}] {keys}"


def _resolve_paths(config: AgentConfig, path: Path) -> AgentConfig:
    base = path.parent.absolute()

    def rel(p: Path | None) -> Path | None:
        return None if p is None else (p if p.is_absolute() else (base / p).resolve())

    can = config.can.model_copy(update={"dbc": [rel(p) for p in config.can.dbc]})
    tls = config.mqtt.tls
    if tls is not None:
        tls = tls.model_copy(update={
            "ca_file": rel(tls.ca_file), "cert_file": rel(tls.cert_file), "key_file": rel(tls.key_file)})
    mqtt = config.mqtt.model_copy(update={"tls": tls, "password_file": rel(config.mqtt.password_file)})
    messages = config.messages.model_copy(update={"catalog_dir": rel(config.messages.catalog_dir)})
    storage = config.storage.model_copy(update={"state_dir": rel(config.storage.state_dir)})
    commands = config.commands.model_copy(update={"key_file": rel(config.commands.key_file)})
    diagnostics = config.diagnostics
    if diagnostics is not None:
        diagnostics = diagnostics.model_copy(update={"signalset": rel(diagnostics.signalset)})
    return config.model_copy(update={"can": can, "mqtt": mqtt, "messages": messages, "storage": storage,
                                     "commands": commands, "diagnostics": diagnostics,
                                     "source": path.absolute()})
