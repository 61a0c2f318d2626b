"""Shared fixtures: paths, real-data captures, and a real Mosquitto broker."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / "shared" / "realdata"
sys.path.insert(0, str(Path(__file__).parent))

from mqtt_helpers import Mosquitto, mosquitto_binary  # noqa: E402


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"real-data captures not present at {REALDATA} (a clone outside the workspace)")
    return REALDATA


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A fresh real Mosquitto for one test."""
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed: run the README's test command, which installs it")
    broker = Mosquitto().start()
    yield broker
    broker.close()
