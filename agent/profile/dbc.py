"""Loading DBC files with cantools, tolerant of the flaws real vehicles' DBCs have (reads files)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import cantools
from cantools.database.can import Database

from agent.core.errors import DbcError

log = logging.getLogger(__name__)

# The message a DBC editor (Vector CANdb++) keeps for signals assigned to no frame; cantools drops it.
PLACEHOLDER_MESSAGE = "VECTOR__INDEPENDENT_SIG_MSG"
_HEADER_RE = re.compile(r"^\s*(BS_|BU_)\s*:", re.MULTILINE)
_FIRST_BO_RE = re.compile(r"^BO_ ", re.MULTILINE)


def load_dbc(path: Path, *, strict: bool = False) -> Database:
    """Load one DBC file.

    Real-world files that cantools' strict mode rejects still load, with a warning: overlapping
    signals (strict=False) and missing ``BS_:``/``BU_:`` header lines (added before parsing).
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DbcError(f"{path}: cannot read DBC: {exc.strerror or exc}") from None
    try:
        return _parse(text, strict=True)
    except Exception as strict_exc:  # noqa: BLE001 - cantools raises several types; all mean "not strict-clean"
        if strict:
            raise DbcError(f"{path}: {_one_line(strict_exc)}") from None
        first_failure = _one_line(strict_exc)
    repaired = _add_missing_headers(text)
    try:
        db = _parse(repaired, strict=False)
    except Exception as exc:  # noqa: BLE001
        raise DbcError(f"{path}: {_one_line(exc)}") from None
    log.warning("%s: loaded in lenient mode (strict parse failed: %s)", path, first_failure)
    return db


def _parse(text: str, *, strict: bool) -> Database:
    db = cantools.database.Database(strict=strict)
    db.add_dbc_string(text)
    return db


def _add_missing_headers(text: str) -> str:
    present = set(_HEADER_RE.findall(text))
    missing = [h for h in ("BS_", "BU_") if h not in present]
    if not missing:
        return text
    match = _FIRST_BO_RE.search(text)
    at = match.start() if match else len(text)
    return text[:at] + "".join(f"{h}:\n\n" for h in missing) + text[at:]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def has_c_bitstruct() -> bool:
    """True when cantools decodes with bitstruct's C extension (2.5-3x faster than pure Python)."""
    try:
        import bitstruct.c  # noqa: F401
    except ImportError:
        return False
    return True


ALLOW_SLOW_ENV = "CARFRIEND_ALLOW_SLOW_DECODE"


def check_c_bitstruct() -> None:
    """Refuse to start without the C extension, unless CARFRIEND_ALLOW_SLOW_DECODE=1 says so.

    The agent extracts most mapped signals itself, but float and nested-multiplexed messages,
    the simulator and `replay` of foreign DBCs go through cantools, which silently falls back
    to pure Python: a Pi that kept up on the bench would then drop frames in the car.
    """
    if has_c_bitstruct():
        return
    if os.environ.get(ALLOW_SLOW_ENV) == "1":
        log.warning("bitstruct's C extension is missing: cantools decodes 2.5-3x slower (%s=1)", ALLOW_SLOW_ENV)
        return
    raise DbcError(
        "cantools: bitstruct's C extension (bitstruct.c) is missing, so DBC decoding would be 2.5-3x "
        "slower; install a bitstruct wheel for this platform (pip install --force-reinstall bitstruct, "
        f"with a C compiler if no wheel exists) or set {ALLOW_SLOW_ENV}=1 to run slowly anyway")
