"""The code stays ruff and mypy clean (the style guide's rule, checked on every run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "agent", "simulators", "relay", "benchmarks",
                             "tests"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]


def test_mypy_finds_nothing_in_the_agent_and_simulator() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", "agent", "simulators"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
