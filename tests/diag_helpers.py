"""The agent's diagnostic polling built from a profile file, with the frames it sends collected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import can

from agent.core.pipeline import Pipeline
from agent.io.diag_runtime import DiagRuntime
from agent.profile.config import load_config
from agent.profile.vehicle import load_vehicle


def polling(path: Path, **runtime: Any) -> tuple[DiagRuntime, list[can.Message]]:
    """The DiagRuntime of the profile at path (its pipeline: .pipeline, the vehicle:
    .pipeline.vehicle) and the list its requests and flow control are sent to."""
    vehicle = load_vehicle(load_config(path, environ={}))
    assert vehicle.diagnostics is not None, f"{path}: no diagnostic polling"
    sent: list[can.Message] = []
    return DiagRuntime(vehicle.diagnostics, Pipeline(vehicle, lambda m: None), sent.append, **runtime), sent
