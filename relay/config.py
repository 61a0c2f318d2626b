"""The relay's configuration: pydantic models, TOML loading, env overrides (reads files)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from agent.core.errors import ConfigError
from agent.profile.config import _describe, _env_value, _read_toml, credential, read_secret

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
    # The relay's client certificate for a broker that requires one (docs/mosquitto: mutual TLS,
    # the certificate's CN is the relay's name in the ACL). The key may instead be the systemd
    # credential `mqtt-client-key`, the password the credential `mqtt-password`.
    cert_file: Path | None = None
    key_file: Path | None = None
    # Stable per instance: the broker keeps the session (and un-acknowledged messages) for it.
    # On the shipped Mosquitto listener (use_username_as_clientid) the broker uses the
    # certificate's CN instead.
    client_id: Annotated[str, Field(min_length=1, max_length=64)] = "carfriend-relay-1"
    # Off by default: Mosquitto cannot keep a car out of a share group (docs/security.md), and a
    # car in the relay's group takes its turn of every car's traffic. Only with a broker whose
    # ACL restricts $share/<group>/ subscriptions per client do instances share the load.
    shared_subscriptions: bool = False
    share_group: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")] = "carfriend-relay"
    session_expiry_s: Annotated[int, Field(ge=0)] = 7 * 24 * 3600
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30

    @model_validator(mode="after")
    def _tls_files_need_tls(self) -> MqttConfig:
        if (self.cert_file or self.key_file or self.ca_file) and not self.tls:
            raise ValueError("ca_file, cert_file and key_file need tls = true")
        if self.key_file and not self.cert_file:
            raise ValueError("key_file without cert_file")
        return self


class DatabaseConfig(_Model):
    # SQLAlchemy URL; a relative sqlite path is relative to the config file.
    url: str = "sqlite:///relay.db"
    echo: bool = False
    # SQLite: how long a write waits for another process's lock (a backup, a sqlite3 shell)
    # before the relay treats the database as unavailable and retries with backoff.
    # PostgreSQL: how long a connection attempt may take before it counts as unavailable.
    timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0


class WebConfig(_Model):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    # File holding the cookie-signing secret; created (0600) on first start when missing. Unset
    # (the default): the secret is kept in the database, so every relay instance shares it.
    # The systemd credential `session-secret` wins over both.
    secret_file: Path | None = None
    # Mark cookies Secure (sent over HTTPS only). Unset: on, unless `host` is a loopback address
    # (a developer's machine, or a TLS proxy on the same host that talks to the relay over http).
    secure_cookies: bool | None = None
    session_max_age_s: Annotated[int, Field(ge=60)] = 14 * 24 * 3600
    login_attempts_per_window: Annotated[int, Field(ge=1)] = 5
    login_window_s: Annotated[int, Field(ge=1)] = 300
    # Live pages re-read the database at least this often. Updates arrive at once anyway: from
    # this instance's ingest, and on PostgreSQL from every instance (LISTEN/NOTIFY); the poll
    # covers a lost notification.
    live_poll_s: Annotated[float, Field(ge=0.2, le=300)] = 5.0


class IngestConfig(_Model):
    max_payload_bytes: Annotated[int, Field(ge=256, le=1_048_576)] = 64 * 1024
    batch_max: Annotated[int, Field(ge=1, le=10_000)] = 500
    # Keep the state history at most this often per vehicle (the latest state is always kept).
    state_history_min_interval_s: Annotated[float, Field(ge=0)] = 60.0
    # Timestamps further ahead of the relay's clock are refused (a car's clock may run a little
    # fast; one in 2099 would freeze its state, as an older document never replaces a newer one).
    max_future_s: Annotated[float, Field(ge=0, le=86400)] = 300.0
    # Signals a vehicle's state may hold (the agent publishes a few dozen); new names beyond
    # are left out and counted, so no car can grow every history row.
    max_signals: Annotated[int, Field(ge=1, le=1000)] = 64
    # /healthz is unhealthy while a message has waited longer than this to be stored.
    max_lag_s: Annotated[float, Field(gt=0)] = 60.0


class KeysConfig(_Model):
    # One file per vehicle, <dir>/<vehicle_id>.key: the HMAC key of its commands.
    dir: Path = Path("keys")


class CommandsConfig(_Model):
    climate_min_c: float = 16.0
    climate_max_c: float = 28.0


class RetentionConfig(_Model):
    """How long each table keeps rows (days of event or arrival time); 0 keeps them forever."""

    # The state history at full resolution, then thinned to one row per state_downsample_s
    # per vehicle, kept state_days in all.
    state_raw_days: Annotated[float, Field(ge=0)] = 7
    state_downsample_s: Annotated[int, Field(ge=60, le=86400)] = 900
    state_days: Annotated[float, Field(ge=0)] = 365
    messages_days: Annotated[float, Field(ge=0)] = 730
    commands_days: Annotated[float, Field(ge=0)] = 90  # commands and their results
    appointments_days: Annotated[float, Field(ge=0)] = 730
    fleet_reports_days: Annotated[float, Field(ge=0)] = 30
    # The relay prunes every interval_s (0: only `carfriend relay prune`), in transactions of
    # at most batch_rows rows, so the ingest never waits long for one.
    interval_s: Annotated[float, Field(ge=0)] = 3600
    batch_rows: Annotated[int, Field(ge=100, le=100_000)] = 2000

    @model_validator(mode="after")
    def _raw_within_total(self) -> RetentionConfig:
        if self.state_days and self.state_raw_days > self.state_days:
            raise ValueError("state_raw_days is longer than state_days")
        return self


class MetricsConfig(_Model):
    # /metrics on the web port answers only this bearer token (or the systemd credential
    # `metrics-token`); without one it is not served there.
    token: SecretStr | None = None
    # An admin listener serving the metrics without a token (0: none). Bind it to an address
    # only the monitoring can reach.
    listen_host: str = "127.0.0.1"
    listen_port: Annotated[int, Field(ge=0, le=65535)] = 0

    @model_validator(mode="after")
    def _long_token(self) -> MetricsConfig:
        if self.token is not None and len(self.token.get_secret_value()) < 16:
            raise ValueError("token: at least 16 characters")
        return self


# Apprise services a user may add by default: hosted services, and self-hosted ones whose address
# is checked (relay/notify/secrets.py). Others (local desktop notifications, custom plugins) not.
APPRISE_SCHEMES = ("ntfy", "ntfys", "tgram", "matrix", "matrixs", "mailto", "mailtos", "pover",
                   "signal", "signals", "hassio", "hassios", "discord", "slack", "gotify",
                   "gotifys", "json", "jsons", "mmost", "mmosts", "rocket", "rockets", "msteams",
                   "pbul", "join", "lametric", "ifttt")


class NotifyConfig(_Model):
    enabled: bool = True
    # Web Push (RFC 8292): the relay's VAPID key, created (0600) on first start, or the systemd
    # credential `vapid-key`; the contact push services may use to reach the relay's operator.
    vapid_key_file: Path = Path("vapid-private.pem")
    vapid_subject: Annotated[str, Field(pattern=r"^(mailto:|https://)\S{3,200}$")] = \
        "mailto:carfriend-relay@localhost"
    # Apprise channel URLs are stored encrypted with this key (created 0600 on first start, or
    # the systemd credential `notify-channel-key`).
    channel_key_file: Path = Path("notify-channels.key")
    apprise_schemes: tuple[Annotated[str, Field(pattern=r"^[a-z0-9]{2,16}$")], ...] = \
        APPRISE_SCHEMES
    # A channel URL whose host is (or resolves to) a loopback, private or link-local address is
    # refused unless this is on: a user must not make the relay post into its own network.
    allow_private_addresses: bool = False
    # Delivery: retries with backoff (retry_s doubling, at most retry_max_s) until max_attempts;
    # a message older than max_age_s when the relay first sees it is not notified.
    retry_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    retry_max_s: Annotated[float, Field(gt=0, le=86400)] = 3600.0
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 12
    max_age_s: Annotated[float, Field(gt=0)] = 86400.0
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 10.0
    workers: Annotated[int, Field(ge=1, le=32)] = 4
    # The relay's public address (https://relay.example.org): e-mail and chat notifications end
    # with a link to the conversation. Empty: no link.
    public_url: Annotated[str, Field(pattern=r"^(https?://\S{3,200})?$")] = ""


class RelayConfig(_Model):
    mqtt: MqttConfig = MqttConfig()
    database: DatabaseConfig = DatabaseConfig()
    web: WebConfig = WebConfig()
    ingest: IngestConfig = IngestConfig()
    keys: KeysConfig = KeysConfig()
    commands: CommandsConfig = CommandsConfig()
    retention: RetentionConfig = RetentionConfig()
    metrics: MetricsConfig = MetricsConfig()
    notify: NotifyConfig = NotifyConfig()


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
    mqtt = config.mqtt
    files = {k: rel(v) for k, v in (("ca_file", mqtt.ca_file), ("cert_file", mqtt.cert_file),
                                    ("key_file", mqtt.key_file)) if v is not None}
    return config.model_copy(update={
        "database": config.database.model_copy(update={"url": url}),
        "web": config.web.model_copy(update={
            "secret_file": rel(config.web.secret_file) if config.web.secret_file else None}),
        "keys": config.keys.model_copy(update={"dir": rel(config.keys.dir)}),
        "notify": config.notify.model_copy(update={
            "vapid_key_file": rel(config.notify.vapid_key_file),
            "channel_key_file": rel(config.notify.channel_key_file)}),
        "mqtt": mqtt.model_copy(update=files),
    })


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path | None
    cert_file: Path | None
    key_file: Path | None


def tls_files(cfg: MqttConfig) -> TlsFiles:
    """The TLS files the relay's MQTT client loads, checked to exist; the key from the systemd
    credential `mqtt-client-key` when there is one. ConfigError names the setting and the file."""
    key = credential("mqtt-client-key") or cfg.key_file
    if cfg.cert_file is not None and key is None:
        raise ConfigError(f"[mqtt] cert_file: {cfg.cert_file}: no key_file and no systemd "
                          "credential mqtt-client-key")
    for label, path in (("ca_file", cfg.ca_file), ("cert_file", cfg.cert_file), ("key_file", key)):
        if path is not None and not path.is_file():
            raise ConfigError(f"[mqtt] {label}: {path}: no such file")
    return TlsFiles(cfg.ca_file, cfg.cert_file, key)


def mqtt_password(cfg: MqttConfig) -> str | None:
    """The broker password: the systemd credential `mqtt-password`, else the config/environment."""
    inline = cfg.password.get_secret_value() if cfg.password else None
    return read_secret("mqtt-password", inline, None)[0]


def metrics_token(cfg: MetricsConfig) -> str | None:
    """The /metrics bearer token: the systemd credential `metrics-token`, else the config."""
    inline = cfg.token.get_secret_value() if cfg.token else None
    return read_secret("metrics-token", inline, None)[0]


def topic(vehicle_id: str, leaf: str) -> str:
    return f"{TOPIC_ROOT}/{vehicle_id}/{leaf}"
