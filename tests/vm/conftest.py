"""Fixtures for the VM tests: the VM set up once per session (it is idempotent)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from vmharness import VirtualMachine, setup


@pytest.fixture(scope="session")
def vm() -> VirtualMachine:
    try:
        setup()
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"tests/vm/setup.sh failed:\n{exc.stdout.decode()}{exc.stderr.decode()}")
    return VirtualMachine()


@pytest.fixture(scope="session")
def guest_python() -> str:
    """The interpreter the guest runs the agent with: this one (the venv is visible inside)."""
    return sys.executable
