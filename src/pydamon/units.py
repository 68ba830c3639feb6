"""Sizes, durations, percentages and counts as users write them, and back to text.

One grammar for every reader: CLI options, module parameters, scheme files (text, JSON, YAML) and
damo records. It is the superset of what damo accepts (``damo/_damo_fmt_str.py``, ``text_to_*``):

- numbers: ``4096``, ``1,024``, ``1.5``, ``1e3``, ``0x1000`` (a hex number takes no unit);
- sizes: a number with ``B``, ``K``/``KB``/``KiB``, ``M``..., ``G``, ``T``, ``P``, ``E`` (in
  powers of 1024, any case: ``4kb`` is 4096), with or without a space (``4 KiB``);
- durations: one or more number-unit pairs in ``ns``, ``us``, ``ms``, ``s``, ``m``/``min``,
  ``h``, ``d`` (``1d``, ``1h 30m``, ``1 m 30 s``); a bare number is in the caller's unit;
- percentages: ``80``, ``80%``, ``12.5 %``; per mille and basis points take a plain number or a
  percentage (``50%`` is 500 permil, 5000 bp);
- ``min`` and ``max`` (0 and the kernel's ``ULONG_MAX``) only where the caller allows them
  (``allow_keywords=True``: the bounds of a range, as in damo's scheme and record files).

Values at or above ``ULONG_MAX`` are ``ULONG_MAX`` (as damo's ``min(ulong_max, ...)``). Errors
are :class:`ValueError` with a one-line message that says what is wrong and what is accepted, but
not the value: callers name it (:func:`explain` puts the two together).
"""

from __future__ import annotations

import math
import re

#: The kernel's ``ULONG_MAX``: what ``max`` means for sizes, counts and times.
ULONG_MAX = 2**64 - 1

_SIZE_UNITS = {"": 1, "b": 1}
for _i, _letter in enumerate("kmgtpe", 1):
    for _suffix in ("", "b", "ib"):
        _SIZE_UNITS[_letter + _suffix] = 1 << (10 * _i)

_TIME_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "min": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
}

_HEX = r"0[xX][0-9a-fA-F]+"
_DECIMAL = r"(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER = rf"[+-]?(?:{_HEX}|{_DECIMAL})"
_VALUE_UNIT = re.compile(rf"\s*({_NUMBER})\s*([A-Za-z%]*)\s*")
_PAIR = re.compile(rf"\s*({_NUMBER})\s*([A-Za-z]*)\s*")

_SIZE_EXAMPLES = "e.g. 4096, 0x1000, 4K, 4kb, 2MiB, 1.5G"
_TIME_EXAMPLES = "e.g. 500us, 100ms, 60s, 5m, 1h 30m, 1d"
_PERCENT_EXAMPLES = "e.g. 0, 5, 12.5, 80%"


def explain(value: object, err: ValueError) -> str:
    """``'fast' is not a duration (...)`` / ``'4X': unknown size unit ...``: the value and what
    is wrong with it, in one line."""
    msg = str(err)
    return f"{value!r} is {msg}" if msg.startswith("not ") else f"{value!r}: {msg}"


def _keywords(allowed: bool) -> str:
    return ", min, max" if allowed else ""


def _keyword(value: object, allow_keywords: bool, examples: str) -> int | None:
    """0 for ``min``, ULONG_MAX for ``max`` (if allowed), None for anything else."""
    if not isinstance(value, str) or value.strip().lower() not in ("min", "max"):
        return None
    if not allow_keywords:
        raise ValueError(f"not allowed here: min and max only bound a range (use {examples})")
    return 0 if value.strip().lower() == "min" else ULONG_MAX


def _to_float(text: str) -> float:
    text = text.replace(",", "")
    sign, digits = (-1, text[1:]) if text[:1] == "-" else (1, text.lstrip("+"))
    if digits[:2].lower() == "0x":
        return float(sign * int(digits, 16))
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def _is_hex(text: str) -> bool:
    return text.lstrip("+-")[:2].lower() == "0x"


def _checked(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    if value < 0:
        raise ValueError(f"{what} must not be negative")
    return value


def _scaled_to_int(value: float, mul: float, div: float, what: str) -> int:
    """``value * mul / div`` of a finite ``value``: a product too large for a float is beyond
    ``ULONG_MAX``, so ``max`` as every value at or above it (not an error, not infinite)."""
    scaled = _checked(value, what) * mul / div
    return ULONG_MAX if scaled >= ULONG_MAX else int(scaled)


def _to_int(value: float, what: str) -> int:
    value = _checked(value, what)
    return ULONG_MAX if value >= ULONG_MAX else int(value)


def _plain(value: object, what: str) -> float | None:
    """The number of an int or float (not a bool); None for text; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"not {what}")
    return None if isinstance(value, str) else float(value)


def parse_number(
    value: object, what: str = "a number", *, allow_keywords: bool = False, signed: bool = False
) -> float:
    """A number from ``12``, ``1,024``, ``1.5``, ``1e3`` or ``0x10``; not negative unless
    ``signed``."""
    examples = "e.g. 12, 1,024, 1.5, 0x10" + _keywords(allow_keywords)
    kw = _keyword(value, allow_keywords, examples)
    if kw is not None:
        return kw
    number = _plain(value, what)
    if number is None:
        m = _VALUE_UNIT.fullmatch(str(value))
        if not m or m.group(2):
            raise ValueError(f"not {what} (use {examples})")
        number = _to_float(m.group(1))
    return number if signed and math.isfinite(number) else _checked(number, what)


def parse_count(
    value: object, what: str = "a number", *, allow_keywords: bool = False, signed: bool = False
) -> int:
    """A whole number (``5``, ``1,000``, ``1e3``, ``0x10``); not negative unless ``signed``."""
    number = parse_number(value, what, allow_keywords=allow_keywords, signed=signed)
    if number >= ULONG_MAX:
        return ULONG_MAX
    if number != int(number):
        raise ValueError(f"not a whole number ({what} has no fraction)")
    return int(number)


def parse_size(value: object, *, allow_keywords: bool = False) -> int:
    """Bytes from ``4096``, ``0x1000``, ``4K``, ``4kb``, ``1.5 GiB`` (and ``min``/``max`` where
    allowed)."""
    examples = _SIZE_EXAMPLES + _keywords(allow_keywords)
    kw = _keyword(value, allow_keywords, examples)
    if kw is not None:
        return kw
    number = _plain(value, "a size")
    if number is not None:
        return _to_int(number, "a size")
    m = _VALUE_UNIT.fullmatch(str(value))
    if not m:
        raise ValueError(f"not a size (use {examples})")
    unit = m.group(2)
    if unit.lower() not in _SIZE_UNITS:
        raise ValueError(
            f"unknown size unit {unit!r} (use B, K, M, G, T, P, E, alone or with B or iB: "
            f"{examples})"
        )
    if unit and _is_hex(m.group(1)):
        raise ValueError(f"a hex number takes no unit (use {examples})")
    return _scaled_to_int(_to_float(m.group(1)), _SIZE_UNITS[unit.lower()], 1, "a size")


def parse_duration(
    value: object,
    unit: str = "us",
    *,
    default_unit: str | None = None,
    allow_keywords: bool = False,
) -> int:
    """A duration in ``unit`` (truncated) from ``100ms``, ``1h 30m``, ``1d`` or a bare number in
    ``default_unit`` (``unit`` if not given); ``min``/``max`` where allowed."""
    examples = _TIME_EXAMPLES + _keywords(allow_keywords)
    kw = _keyword(value, allow_keywords, examples)
    if kw is not None:
        return kw
    scale = _TIME_UNITS_NS[unit]
    bare_ns = _TIME_UNITS_NS[default_unit or unit]
    number = _plain(value, "a duration")
    if number is not None:
        return _scaled_to_int(number, bare_ns, scale, "a duration")
    text = str(value)
    total_ns = 0.0
    pos = 0
    while pos < len(text) or pos == 0:
        m = _PAIR.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"not a duration (use {examples})")
        word = m.group(2).lower()
        if word and word not in _TIME_UNITS_NS:
            raise ValueError(
                f"unknown time unit {m.group(2)!r} (use ns, us, ms, s, m, h, d: {examples})"
            )
        total_ns += _checked(_to_float(m.group(1)), "a duration") * (
            _TIME_UNITS_NS[word] if word else bare_ns
        )
        pos = m.end()
    return ULONG_MAX if math.isinf(total_ns) else _scaled_to_int(total_ns, 1, scale, "a duration")


def parse_percent(value: object, *, allow_keywords: bool = False) -> float:
    """Percent from ``80``, ``80%``, ``12.5 %`` (an int when whole); ``min``/``max`` where
    allowed."""
    examples = _PERCENT_EXAMPLES + _keywords(allow_keywords)
    kw = _keyword(value, allow_keywords, examples)
    if kw is not None:
        return kw
    number = _plain(value, "a percentage")
    if number is None:
        m = _VALUE_UNIT.fullmatch(str(value))
        if not m or m.group(2) not in ("", "%"):
            raise ValueError(f"not a percentage (use {examples})")
        number = _to_float(m.group(1))
    number = _checked(number, "a percentage")
    if number >= ULONG_MAX:
        return ULONG_MAX
    return int(number) if number == int(number) else number


def _parse_fraction(value: object, per_percent: int, what: str, allow_keywords: bool) -> int:
    if isinstance(value, str) and value.strip().endswith("%"):
        return _to_int(float(parse_percent(value)) * per_percent, what)
    try:
        return parse_count(value, what, allow_keywords=allow_keywords)
    except ValueError as err:
        raise ValueError(f"{err} (or a percentage, e.g. 50%)") from None


def parse_permil(value: object, *, allow_keywords: bool = False) -> int:
    """Per mille from ``500`` or a percentage (``50%`` is 500)."""
    return _parse_fraction(value, 10, "a per-mille value", allow_keywords)


def parse_bp(value: object, *, allow_keywords: bool = False) -> int:
    """Basis points (1/10000) from ``5000`` or a percentage (``50%`` is 5000)."""
    return _parse_fraction(value, 100, "a basis-point value", allow_keywords)


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    word = value.strip().lower() if isinstance(value, str) else None
    if word in ("y", "yes", "true", "on", "1"):
        return True
    if word in ("n", "no", "false", "off", "0"):
        return False
    raise ValueError("not a boolean (use true or false, yes or no, 1 or 0)")


# -- formatting ------------------------------------------------------------------------------------


def format_bytes(nbytes: float, *, exact: bool = False, precision: int = 3) -> str:
    """A size for people (damo's style): ``512 B``, ``4.000 KiB``, ``1.500 GiB``.

    ``exact``: the shortest form that reads back to the same value: ``4K``, ``2M``, ``1536``,
    ``max``; the scheme text form writes these.
    """
    if exact:
        sz = int(nbytes)
        if sz >= ULONG_MAX:
            return "max"
        for shift, letter in ((40, "T"), (30, "G"), (20, "M"), (10, "K")):
            if sz and sz % (1 << shift) == 0:
                return f"{sz >> shift}{letter}"
        return str(sz)
    value = float(nbytes)
    if abs(value) < 1024:
        return f"{int(value)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if abs(value) < 1024 or unit == "PiB":
            break
    return f"{value:.{precision}f} {unit}"


def format_duration_us(us: float, *, exact: bool = False) -> str:
    """A duration for people: ``250 us``, ``1.500 ms``, ``2.000 s``, ``3 m 1.000 s``, ``1 h ...``.

    ``exact``: the shortest form that reads back to the same microseconds: ``60s``, ``100ms``,
    ``1500us``, ``2d``, ``max``; the scheme text form writes these.
    """
    if exact:
        whole = int(us)
        if whole >= ULONG_MAX:
            return "max"
        ns = whole * 1000
        for unit in ("d", "h", "m", "s", "ms"):
            if ns and ns % _TIME_UNITS_NS[unit] == 0:
                return f"{ns // _TIME_UNITS_NS[unit]}{unit}"
        return f"{whole}us"
    us = float(us)
    if us < 0:
        return "-" + format_duration_us(-us)
    if us >= 3_600_000_000:
        h = int(us // 3_600_000_000)
        return f"{h} h {format_duration_us(us - h * 3_600_000_000)}"
    if us >= 60_000_000:
        m = int(us // 60_000_000)
        return f"{m} m {(us - m * 60_000_000) / 1e6:.3f} s"
    if us >= 1_000_000:
        return f"{us / 1e6:.3f} s"
    if us >= 1000:
        return f"{us / 1000:.3f} ms"
    return f"{us:.0f} us"


def format_percent(percent: float) -> str:
    """A percentage that reads back to the same value: ``80``, ``12.5``, ``max``."""
    if percent >= ULONG_MAX:
        return "max"
    return str(int(percent)) if percent == int(percent) else repr(float(percent))
