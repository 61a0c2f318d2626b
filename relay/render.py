"""Defensive formatting for the templates: whatever a car got into the database, a page renders (no IO)."""

from __future__ import annotations

import math
import re
from typing import Any

from markupsafe import Markup

_SURROGATES = re.compile("[\ud800-\udfff]")
PLACEHOLDER = "—"


def printable(value: Any) -> Any:
    """Jinja's ``finalize``, applied to every value a template prints: a lone surrogate (which
    UTF-8 cannot encode, so the whole page would fail) becomes U+FFFD."""
    if isinstance(value, str) and _SURROGATES.search(value):
        cleaned = _SURROGATES.sub("\ufffd", value)
        return Markup(cleaned) if isinstance(value, Markup) else cleaned
    return value


def number(value: Any, fmt: str = "%.0f", suffix: str = "", divide_by: float = 1.0) -> str:
    """``fmt % (value / divide_by)`` + suffix for a finite number of sane size, else "—"
    (a string, a 401-digit integer, infinity or NaN never reach the format)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return PLACEHOLDER
    try:
        scaled = float(value) / divide_by
    except (OverflowError, ZeroDivisionError):
        return PLACEHOLDER
    if not math.isfinite(scaled) or abs(scaled) > 1e15:
        return PLACEHOLDER
    return fmt % scaled + suffix
