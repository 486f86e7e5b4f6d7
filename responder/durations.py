"""Durations: seconds, or Prometheus-style text (`90s`, `15m`, `1h30m`, `2d`).

Rules, flow files, rule tests and manual runs all take durations; this module is theirs,
so the flow DSL and a manual run need not import the rule model to read one.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BeforeValidator, WithJsonSchema

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(value: object) -> float:
    """Seconds from a Prometheus-style duration (`90s`, `15m`, `1h30m`, `2d`) or a number."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like 90s, 15m, 1h30m, 2d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return _finite(value)
    if isinstance(value, str):
        m = _DURATION.match(value.strip())
        if m and any(m.groups()):
            days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
            return _finite(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
    raise ValueError(f"{value!r} is not a duration; use seconds or text like 90s, 15m, 1h30m, 2d")


def _finite(seconds: float) -> float:
    # Timers and leases add durations to the clock: NaN, infinity or an int past float's
    # range would break them, not mean "forever".
    try:
        result = float(seconds)
    except OverflowError:
        result = math.inf
    if not math.isfinite(result):
        raise ValueError("a duration must be a finite number of seconds")
    return result


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": _DURATION.pattern},
            ],
            "description": "Seconds, or a duration like 90s, 15m, 1h30m, 2d.",
        }
    ),
]
