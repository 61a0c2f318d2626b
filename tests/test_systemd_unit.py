"""The shipped systemd unit: hardening score and syntax, checked offline with systemd-analyze."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "carfriend.service"
MAX_EXPOSURE = 2.0


def systemd_analyze() -> str:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.fail("systemd-analyze is not installed: `apt-get install systemd` (the test command does)")
    return binary


def directives(unit: Path) -> dict[str, list[str]]:
    """Every Key=value of a unit file, keys repeated as systemd allows (e.g. SystemCallFilter)."""
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_unit_exposure_score_is_at_most_two() -> None:
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, f"no exposure line in systemd-analyze output:\n{result.stdout}\n{result.stderr}"
    score = float(match.group(1))
    assert score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE}:\n{result.stdout}"


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify insists that ExecStart= exists; the venv binary only exists after install.sh, so
    # check a copy pointing at /bin/true. Unknown keys are only warnings: any output fails.
    text = UNIT.read_text().replace("ExecStart=/opt/carfriend/venv/bin/carfriend", "ExecStart=/bin/true")
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    result = subprocess.run([systemd_analyze(), "verify", "--man=no", str(copy)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        f"systemd-analyze verify complained:\n{result.stdout}{result.stderr}")


def test_unit_is_notify_with_a_watchdog_and_restarts_on_failure() -> None:
    d = directives(UNIT)
    assert d["Type"] == ["notify"]
    assert d["NotifyAccess"] == ["main"]
    assert int(d["WatchdogSec"][0]) > 0
    assert d["Restart"] == ["on-failure"]
    # Restarts slower than the start limit allows, so a broken config never loops quickly.
    assert int(d["RestartSec"][0]) * int(d["StartLimitBurst"][0]) > int(d["StartLimitIntervalSec"][0])


def test_unit_runs_the_installed_agent_as_its_own_user_with_state_and_config_dirs() -> None:
    d = directives(UNIT)
    assert d["ExecStart"] == ["/opt/carfriend/venv/bin/carfriend run --config /etc/carfriend/carfriend.toml"]
    assert d["User"] == ["carfriend"]
    assert d["StateDirectory"] == ["carfriend"]
    assert d["CapabilityBoundingSet"] == [""]
    assert set(d["RestrictAddressFamilies"][0].split()) == {"AF_CAN", "AF_INET", "AF_INET6", "AF_UNIX"}


def test_unit_waits_for_no_network_online() -> None:
    # A car is often offline: the agent must start (and queue messages) without a network.
    d = directives(UNIT)
    ordering = " ".join(d.get("After", []) + d.get("Wants", []) + d.get("Requires", []))
    assert "network-online.target" not in ordering
