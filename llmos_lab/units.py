"""Byte quantities as people write them ("2GiB", "512 MB", 1_000_000) and back."""

from __future__ import annotations

import math
import re

from .errors import ConfigError

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_bytes(value: int | float | str, parameter: str = "memory") -> int:
    """``"2GiB"`` -> 2147483648. Negative, NaN, infinite or unparsable values are errors."""
    if isinstance(value, bool):
        raise ConfigError(parameter, value, "a byte count such as 2147483648 or '2GiB'")
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        value = value.item()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise ConfigError(parameter, value, "a finite, non-negative byte count")
        return int(value)
    if isinstance(value, str):
        match = _PATTERN.match(value)
        if match and match.group(2).lower() in _UNITS:
            amount = float(match.group(1)) * _UNITS[match.group(2).lower()]
            if not math.isfinite(amount):
                raise ConfigError(parameter, value, "a finite byte count")
            return int(amount)
    raise ConfigError(parameter, value,
                      "a byte count such as 2147483648 or a string like '2GiB', '512MB'")


def format_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover
