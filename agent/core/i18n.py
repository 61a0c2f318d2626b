"""Locale-aware formatting of times and numbers for the persona's texts (no IO)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo


def format_clock(dt: datetime, locale: str) -> str:
    """'2:15 a.m.' in English, '午前2時15分' in Japanese."""
    hour12 = dt.hour % 12 or 12
    if locale == "ja":
        half = "午前" if dt.hour < 12 else "午後"
        return f"{half}{hour12}時" + (f"{dt.minute}分" if dt.minute else "")
    suffix = "a.m." if dt.hour < 12 else "p.m."
    if dt.hour == 12 and dt.minute == 0:
        return "noon"
    if dt.hour == 0 and dt.minute == 0:
        return "midnight"
    return f"{hour12}:{dt.minute:02d} {suffix}"


_EN_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_JA_DAYS = "月火水木金土日"


def format_when(target: datetime, now: datetime, locale: str) -> tuple[str, str]:
    """(time text, day word) of target seen from now, both in the vehicle's zone.

    The day word is '' today, 'tomorrow' / '明日' the next day, else the weekday.
    """
    clock = format_clock(target, locale)
    days = (target.date() - now.date()).days
    if days <= 0:
        return clock, ""
    if days == 1:
        return clock, "明日" if locale == "ja" else "tomorrow"
    if locale == "ja":
        return clock, f"{target.month}月{target.day}日({_JA_DAYS[target.weekday()]})"
    return clock, f"on {_EN_DAYS[target.weekday()]}"


def local(ts: float, zone: str) -> datetime:
    return datetime.fromtimestamp(ts, ZoneInfo(zone))


def format_number(value: float, locale: str, decimals: int = 0) -> str:
    """Grouped thousands; the same for en and ja ('1,234.5')."""
    return f"{value:,.{decimals}f}"
