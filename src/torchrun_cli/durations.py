"""Durations as users write them: `90s`, `15m`, `2h`, `1h30m`, `1d`, or plain seconds."""

from __future__ import annotations

import re

_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_S = 365 * 86400.0


def parse_duration(value: object) -> float:
    """Seconds; raises ValueError (with the reason) for anything else, whatever its type."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("not a duration")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = value.strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif text and _PART.sub("", text) == "":
            seconds = sum(float(n) * _UNIT_S[u] for n, u in _PART.findall(text))
        else:
            raise ValueError("not a duration")
    if not seconds > 0:
        raise ValueError("must be more than zero")
    if seconds > MAX_S:
        raise ValueError("must be at most 365 days")
    return seconds
