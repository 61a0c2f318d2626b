"""The relay's configuration: pydantic models, TOML loading, env overrides (reads files)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from agent.core.errors import ConfigError
from agent.profile.config import _describe, _env_value, _read_toml

ENV_PREFIX = "CARFRIEND_RELAY_"
TOPIC_ROOT = "carfriend/v1"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttConfig(_Model):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    ca_file: Path | None = None
    # Stable per instance: the broker keeps the session (and un-acknowledged messages) for it.
    client_id: Annotated[str, Field(min_length=1, max_length=64)] = "carfriend-relay-1"
    # Instances with the same group share the load ($share/<group>/...).
    share_group: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")] = "carfriend-relay"
    shared_subscriptions: bool = True
    session_expiry_s: Annotated[int, Field(ge=0)] = 7 * 24 * 3600
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30


class DatabaseConfig(_Model):
    # SQLAlchemy URL; a relative sqlite path is relative to the config file.
    url: str = "sqlite:///relay.db"
    echo: bool = False


class WebConfig(_Model):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    # File holding the cookie-signing secret; created (0600) on first start when missing.
    secret_file: Path = Path("relay-secret.key")
    # Mark cookies Secure: set when the relay is served over HTTPS (behind a proxy).
    secure_cookies: bool = False
    session_max_age_s: Annotated[int, Field(ge=60)] = 14 * 24 * 3600
    login_attempts_per_window: Annotated[int, Field(ge=1)] = 5
    login_window_s: Annotated[int, Field(ge=1)] = 300


class IngestConfig(_Model):
    max_payload_bytes: Annotated[int, Field(ge=256, le=1_048_576)] = 64 * 1024
    batch_max: Annotated[int, Field(ge=1, le=10_000)] = 500
    # Keep the state history at most this often per vehicle (the latest state is always kept).
    state_history_min_interval_s: Annotated[float, Field(ge=0)] = 60.0


class KeysConfig(_Model):
    # One file per vehicle, <dir>/<vehicle_id>.key: the HMAC key of its commands.
    dir: Path = Path("keys")


class CommandsConfig(_Model):
    climate_min_c: float = 16.0
    climate_max_c: float = 28.0


class RelayConfig(_Model):
    mqtt: MqttConfig = MqttConfig()
    database: DatabaseConfig = DatabaseConfig()
    web: WebConfig = WebConfig()
    ingest: IngestConfig = IngestConfig()
    keys: KeysConfig = KeysConfig()
    commands: CommandsConfig = CommandsConfig()


def load_config(path: Path | str | None, environ: Mapping[str, str] | None = None) -> RelayConfig:
    """Read a relay config (or the defaults when path is None), apply env overrides, resolve paths."""
    raw: dict[str, Any] = _read_toml(Path(path)) if path is not None else {}
    apply_env_overrides(raw, os.environ if environ is None else environ)
    try:
        config = RelayConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([f"{path}: {_describe(err)}" for err in exc.errors()]) from None
    base = Path(path).resolve().parent if path is not None else Path.cwd()
    return resolve_paths(config, base)


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Apply CARFRIEND_RELAY_<SECTION>__<KEY> variables (e.g. CARFRIEND_RELAY_DATABASE__URL)."""
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, key = (k.lower() for k in name[len(ENV_PREFIX):].split("__", 1))
        node = raw.setdefault(section, {})
        if isinstance(node, dict):
            node[key] = _env_value(text)


def resolve_paths(config: RelayConfig, base: Path) -> RelayConfig:
    def rel(p: Path) -> Path:
        return p if p.is_absolute() else base / p

    url = config.database.url
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite://":
        db_path = url[len(prefix):]
        if db_path and db_path != ":memory:":
            url = prefix + str(rel(Path(db_path)))
    ca = rel(config.mqtt.ca_file) if config.mqtt.ca_file else None
    return config.model_copy(update={
        "database": config.database.model_copy(update={"url": url}),
        "web": config.web.model_copy(update={"secret_file": rel(config.web.secret_file)}),
        "keys": config.keys.model_copy(update={"dir": rel(config.keys.dir)}),
        "mqtt": config.mqtt.model_copy(update={"ca_file": ca}),
    })


def topic(vehicle_id: str, leaf: str) -> str:
    return f"{TOPIC_ROOT}/{vehicle_id}/{leaf}"
