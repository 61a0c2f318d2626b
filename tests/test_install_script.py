"""scripts/install.sh --check: what a target lacks for --vcan / --can0 is named before anything changes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "scripts" / "install.sh"


def machine(tmp_path: Path, *commands: str) -> str:
    """A PATH holding only what install.sh needs to get going, plus `commands` (present is all the
    check asks of udevadm and networkctl, so /bin/true stands in for them)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(shutil.which("dirname") or "/usr/bin/dirname", bin_dir / "dirname")
    for name in commands:
        os.symlink("/bin/true", bin_dir / name)
    return str(bin_dir)


def check(path: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", str(INSTALL), *options, "--check"], env={"PATH": path},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("options", [("--vcan",), ("--can0", "500000")])
def test_a_can_link_without_udev_and_networkd_is_refused_with_what_to_install(tmp_path: Path, options: tuple[str, ...]) -> None:
    result = check(machine(tmp_path), *options)
    assert result.returncode == 1, result
    assert "need udev and systemd-networkd" in result.stderr
    assert result.stderr.rstrip().endswith("apt-get install -y udev systemd"), result.stderr


def test_udev_alone_missing_names_udev_alone(tmp_path: Path) -> None:
    result = check(machine(tmp_path, "networkctl"), "--vcan")
    assert result.returncode == 1, result
    assert result.stderr.rstrip().endswith("apt-get install -y udev"), result.stderr


def test_a_machine_with_udev_and_networkd_passes_the_check(tmp_path: Path) -> None:
    result = check(machine(tmp_path, "udevadm", "networkctl"), "--vcan")
    assert result.returncode == 0, result
    assert "has what the install with these options needs" in result.stdout


def test_without_a_can_link_to_set_up_udev_is_not_needed(tmp_path: Path) -> None:
    result = check(machine(tmp_path))
    assert result.returncode == 0, result
