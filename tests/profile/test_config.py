"""Config: typos are errors, every problem is listed at once, env overrides, --dbc, secrets hidden."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from frames import EV_CONFIG, EV_DBC

from agent.core.errors import ConfigError
from agent.profile.config import load_config

BROKEN = f"""
[vehicle]
id = "car-1"
timezone = "Mars/Olympus"
locael = "en"

[can]
dbc = ["{EV_DBC}", "missing.dbc"]

[signals]
"Vehicle.Speed" = "Drive_State.VehicleSpeeed"
"Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed" = "BMS_Statuz.SOC"
"Vehicle.Powertrain.TractionBattery.Charging.IsCharging" = {{ source = "Charger_Status.ChargerState", true_values = ["CHARGNG"] }}

[mqtt]
password = "hunter2-secret"
port = 99999
"""


def check(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", "check-config", str(path), *extra],
                          capture_output=True, text=True, timeout=60)


def test_check_config_lists_every_schema_problem_at_once(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(BROKEN)
    result = check(path)
    assert result.returncode == 1
    out = result.stdout + result.stderr
    assert f"{path}: [vehicle] locael: Extra inputs are not permitted" in out
    assert "[vehicle] timezone" in out and "Mars/Olympus" in out
    assert "[mqtt] port" in out
    assert "hunter2" not in out


def test_check_config_lists_every_dbc_and_mapping_problem_at_once(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(BROKEN.replace('timezone = "Mars/Olympus"\nlocael = "en"', "").replace("port = 99999", ""))
    result = check(path)
    assert result.returncode == 1
    out = result.stdout
    assert "missing.dbc: cannot read DBC" in out
    assert '"Vehicle.Speed": message "Drive_State" has no signal "VehicleSpeeed" (did you mean "VehicleSpeed"?)' in out
    assert 'message "BMS_Statuz" is in none of the DBC files (did you mean "BMS_Status"?)' in out
    assert 'true_values: "CHARGNG" is not a value of "ChargerState"' in out
    assert out.count("error:") == 4
    assert "hunter2" not in out


def test_check_config_accepts_the_reference_config() -> None:
    result = check(EV_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("OK")


def test_dbc_option_replaces_the_config_dbc_list(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(EV_CONFIG.read_text().replace("../../dbc/carfriend_ev.dbc", "/nowhere/ev.dbc"))
    assert check(path).returncode == 1
    assert check(path, "--dbc", str(EV_DBC)).returncode == 0


def test_environment_overrides_any_config_value() -> None:
    env = {"CARFRIEND_VEHICLE__LOCALE": "ja", "CARFRIEND_MQTT__PORT": "8883", "CARFRIEND_MQTT__HOST": "broker.local",
           "CARFRIEND_RULES__BATTERY_LOW__THRESHOLD": "15", "CARFRIEND_MQTT__PASSWORD": "from-env"}
    config = load_config(EV_CONFIG, environ=env)
    assert config.vehicle.locale == "ja" and config.mqtt.port == 8883 and config.mqtt.host == "broker.local"
    assert config.rules.battery_low.threshold == 15
    assert config.mqtt.password is not None and config.mqtt.password.get_secret_value() == "from-env"
    assert "from-env" not in repr(config)


def test_paths_resolve_relative_to_the_config_file() -> None:
    config = load_config(EV_CONFIG, environ={})
    assert config.can.dbc == [EV_DBC]


def test_unreadable_and_invalid_toml_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[vehicle\nid=1")
    with pytest.raises(ConfigError, match=f"{bad}: not valid TOML"):
        load_config(bad, environ={})


def test_secrets_come_from_the_systemd_credential_then_the_file_then_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.commands.runner import read_command_key
    from agent.profile.config import read_secret

    creds, key_file = tmp_path / "creds", tmp_path / "command.key"
    creds.mkdir()
    key_file.write_text("from-the-key-file-0123456789\n")
    env = {"CARFRIEND_COMMANDS__KEY_FILE": str(key_file)}
    monkeypatch.setenv("CARFRIEND_COMMAND_KEY", "from-the-environment-0123456789")
    assert read_command_key(load_config(EV_CONFIG, environ=env)) == b"from-the-key-file-0123456789"
    (creds / "command-key").write_text("from-the-credential-0123456789")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert read_command_key(load_config(EV_CONFIG, environ=env)) == b"from-the-credential-0123456789"
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    assert read_command_key(load_config(EV_CONFIG, environ={})) == b"from-the-environment-0123456789"
    monkeypatch.setenv("CARFRIEND_COMMAND_KEY", "short-secret")
    with pytest.raises(ConfigError, match="shorter than 16") as short:
        read_command_key(load_config(EV_CONFIG, environ={}))
    assert "short-secret" not in str(short.value)
    with pytest.raises(ConfigError, match="cannot read mqtt-password"):
        read_secret("mqtt-password", None, tmp_path / "missing")


def test_home_assistant_and_health_sections_are_checked_with_clear_messages(tmp_path: Path) -> None:
    path = tmp_path / "car.toml"
    path.write_text('[vehicle]\nid = "car-1"\n[homeassistant]\nenabled = true\ndiscovery_prefix = "home/#"\n'
                    '[health]\ninterval_s = 1\nenabeld = false\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = "\n".join(err.value.problems)
    assert "[homeassistant] discovery_prefix" in text and "[health] interval_s" in text and "[health] enabeld" in text
    path.write_text('[vehicle]\nid = "car-1"\n[homeassistant]\nenabled = true\ndiscovery_prefix = "ha/disc"\n')
    config = load_config(path)
    assert config.homeassistant.discovery_prefix == "ha/disc" and config.health.interval_s == 300
    assert not load_config(EV_CONFIG).homeassistant.enabled  # opt-in
