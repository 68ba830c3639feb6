"""Sizes and durations as users write them (``4K``, ``128M``, ``1GiB``; ``100ms``, ``120s``)."""

from __future__ import annotations

import re

_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_TIME_UNITS_US = {"us": 1, "ms": 1000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000}


def parse_size(text: str) -> int:
    """``4096``, ``4K``, ``1.5G``, ``128MiB`` -> bytes; ``ValueError`` with a one-line message."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtb]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise ValueError(f"{text!r} is not a size (e.g. 4096, 4K, 128M, 1G)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def parse_duration_us(text: str, default_unit: str = "us") -> int:
    """``120s``, ``100ms``, ``5000us``, ``2m`` -> microseconds; a bare number is in
    ``default_unit``."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h)?\s*", text.lower())
    if not m:
        raise ValueError(f"{text!r} is not a duration (e.g. 120s, 100ms, 5000us)")
    return int(float(m.group(1)) * _TIME_UNITS_US[m.group(2) or default_unit])
