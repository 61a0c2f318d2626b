"""The standard PIDs each ECU supports, remembered across restarts in the state dir (a JSON file).

Asked once through the "supported PIDs" bitmaps (0100, 0120, ...); on the next start the
remembered answer is used and no bitmap is asked again. The file is validated on read by one
strict model (size-capped, response ids 0x7E8-0x7EF, PIDs 0x01-0xFF, the vehicle id it was
written for); a corrupt, oversized or foreign file is ignored with a warning and discovery
simply runs again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.core.diag_profile import OBD_RESPONSE_IDS

log = logging.getLogger(__name__)
MAX_FILE_BYTES = 64 * 1024
SUPPORTED_PIDS_FILE = "supported_pids.json"  # in [storage] state_dir
Pid = Annotated[int, Field(ge=0x01, le=0xFF, strict=True)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EcuPids(_Strict):
    rx_id: Annotated[int, Field(ge=min(OBD_RESPONSE_IDS), le=max(OBD_RESPONSE_IDS), strict=True)]
    pids: Annotated[list[Pid], Field(max_length=255)]


class SupportedPids(_Strict):
    """The memory file."""

    version: Annotated[int, Field(ge=1, le=1, strict=True)] = 1
    vehicle_id: Annotated[str, Field(min_length=1, max_length=128)]
    ecus: Annotated[list[EcuPids], Field(max_length=len(OBD_RESPONSE_IDS))]


def load_supported(path: Path, vehicle_id: str) -> dict[int, set[int]] | None:
    """The remembered supported PIDs for this vehicle, or None (no file, or ignored with a warning)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("%s: cannot read remembered supported PIDs (%s); asking the car again", path, exc)
        return None
    try:
        if size > MAX_FILE_BYTES:
            raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
        memory = SupportedPids.model_validate_json(path.read_bytes())
    except (OSError, ValueError, ValidationError) as exc:
        reason = f"{exc.error_count()} invalid field(s)" if isinstance(exc, ValidationError) else str(exc)
        log.warning("%s: remembered supported PIDs ignored (%s); asking the car again", path, reason)
        return None
    if memory.vehicle_id != vehicle_id:
        log.warning("%s: remembered supported PIDs are of vehicle %r, not %r; asking the car again",
                    path, memory.vehicle_id, vehicle_id)
        return None
    return {e.rx_id: set(e.pids) for e in memory.ecus if e.pids} or None


def save_supported(path: Path, vehicle_id: str, supported: dict[int, set[int]]) -> None:
    """Write atomically (a temporary file renamed over the old one); a failure is logged, not raised."""
    memory = SupportedPids(vehicle_id=vehicle_id, ecus=[
        EcuPids(rx_id=rx, pids=sorted(p for p in pids if 0x01 <= p <= 0xFF))
        for rx, pids in sorted(supported.items()) if rx in OBD_RESPONSE_IDS])
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(memory.model_dump(), separators=(",", ":")))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("%s: cannot remember supported PIDs: %s", path, exc)


def forget_supported(path: Path) -> None:
    """Delete a memory the car contradicted (a different car, an ECU changed); a failure is logged."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("%s: cannot delete the remembered supported PIDs: %s", path, exc)
