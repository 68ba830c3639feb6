"""Reading the values of scheme files, with errors that name where the bad value is.

A :class:`DocPath` is the place in a JSON/YAML document (``f: [0].quotas.goals[1].metric``);
:func:`field` reads one value with a parser and turns its ``ValueError`` into a
:class:`SchemeFileError` naming that place. The ``read_*`` parsers are :mod:`pydamon.units`'
with ``min`` and ``max`` allowed, as damo allows them in every field of a scheme (text or JSON).
"""

from __future__ import annotations

import difflib
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from pydamon import units
from pydamon.damos.kinds import AgeUnit, NrAccessesUnit
from pydamon.units import ULONG_MAX

E = TypeVar("E", bound=enum.Enum)


class SchemeFileError(ValueError):
    """A scheme file or text that cannot be parsed; the message is one line naming where."""


class DocPath:
    """Where in a document we are, for error messages."""

    def __init__(self, source: str, parts: Sequence[str] = ()) -> None:
        self.source = source
        self.parts = list(parts)

    def __truediv__(self, part: object) -> DocPath:
        return DocPath(self.source, [*self.parts, str(part)])

    def error(self, msg: str) -> SchemeFileError:
        return SchemeFileError(f"{self.source}: {self}: {msg}")

    def __str__(self) -> str:
        """``[0].quotas.time_ms`` / ``schemes[1].filters[0].type``: list indexes in brackets."""
        where = ""
        for part in self.parts:
            where += f"[{part}]" if part.isdigit() else (f".{part}" if where else part)
        return where or "top level"


def unknown_key_message(key: object, known: Iterable[str]) -> str:
    """``unknown key 'mn' (did you mean 'min'?)``, or the known keys when none is close."""
    names = sorted(known)
    close = difflib.get_close_matches(str(key), names, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(names)}"
    return f"unknown key {str(key)!r} ({hint})"


def check_keys(
    kv: Mapping[Any, Any], path: DocPath, known: Iterable[str], ignored: Iterable[str] = ()
) -> None:
    """Refuse a key that is not ``known`` (nor an ``ignored`` one, e.g. damo's read-only output
    such as ``stats``): a misspelt key must never fall back to a default that widens a scheme."""
    allowed = set(known) | set(ignored)
    for key in kv:
        if str(key) not in allowed:
            raise (path / key).error(unknown_key_message(key, known))


def check_range(
    value: float, path: DocPath, low: float, high: float | None, unit: str = ""
) -> None:
    """``value`` in ``[low, high]`` (``high`` None: no upper bound), else an error at ``path``
    naming the allowed range."""
    if value < low or (high is not None and value > high):
        unit = f" {unit}" if unit else ""
        allowed = (
            f"{plain_number(low)} to {plain_number(high)}"
            if high is not None
            else (f"at least {plain_number(low)}")
        )
        raise path.error(f"{plain_number(value)}{unit} is out of range ({allowed}{unit})")


def field(kv: Mapping[str, Any], key: str, path: DocPath, parse: Callable[..., Any]) -> Any:
    """``parse(kv[key])``; a bad value raises a :class:`SchemeFileError` at ``path.key``."""
    try:
        return parse(kv[key])
    except (ValueError, OverflowError, TypeError) as err:
        raise (path / key).error(f"{kv[key]!r}: {err}") from None


def mapping(value: object, path: DocPath) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise path.error(f"expected an object, got {type(value).__name__}")
    return value


def items(value: object, path: DocPath) -> list[Any]:
    if not isinstance(value, list):
        raise path.error(f"expected a list, got {type(value).__name__}")
    return value


def child(kv: Mapping[str, Any], key: str, path: DocPath) -> tuple[Mapping[str, Any], DocPath]:
    """The object at ``kv[key]`` and its path."""
    return mapping(kv[key], path / key), path / key


def enum_parser(enum_type: type[E], what: str) -> Callable[[object], E]:
    """A parser of ``enum_type``'s values (case-insensitive), naming them when it fails."""

    def parse(value: object) -> E:
        try:
            return enum_type(str(value).strip().lower())
        except ValueError:
            names = ", ".join(str(e.value) for e in enum_type)
            raise ValueError(f"unknown {what}; use one of {names}") from None

    return parse


def read_size(value: object) -> int:
    return units.parse_size(value, allow_keywords=True)


def read_us(value: object) -> int:
    return units.parse_duration(value, "us", allow_keywords=True)


def read_ms(value: object) -> int:
    return units.parse_duration(value, "ms", allow_keywords=True)


#: The largest watermark: the metric (free memory rate) is per mille of all memory.
MAX_WMARK_PERMIL = 1000


def checked_percent(value: float) -> float:
    """``value`` if it is a percentage (0..100)."""
    if value > 100:
        raise ValueError("out of range: a percentage is 0 to 100 (or min, max)")
    return value


def read_percent(value: object) -> float:
    """A percentage 0..100, or ``min``/``max`` (the bounds of an access-rate range)."""
    if _is_keyword(value):
        return units.parse_percent(value, allow_keywords=True)
    return checked_percent(units.parse_percent(value))


def read_permil(value: object) -> int:
    return units.parse_permil(value, allow_keywords=True)


def read_wmark(value: object) -> int:
    """A watermark: per mille 0..1000 (or a percentage, ``50%`` is 500)."""
    permil = units.parse_permil(value)
    if permil > MAX_WMARK_PERMIL:
        raise ValueError(f"out of range: a watermark is 0 to {MAX_WMARK_PERMIL} per mille")
    return permil


def read_count(what: str) -> Callable[[object], int]:
    return lambda value: units.parse_count(value, what, allow_keywords=True)


def max_or(value: float, fmt: Callable[[float], Any]) -> Any:
    """``max`` for ULONG_MAX, else ``fmt(value)``."""
    return "max" if value >= ULONG_MAX else fmt(value)


def plain_number(value: float) -> int | float:
    return int(value) if value == int(value) else float(value)


def _is_keyword(value: object) -> bool:
    return isinstance(value, str) and value.strip().lower() in ("min", "max")


def nr_accesses_value(value: object, unit: str | None) -> tuple[float, str | None]:
    """An access frequency bound and the unit it carried (``5 samples``: samples; ``5``/``5 %``:
    percent unless ``unit`` says samples; ``min``/``max``: None, the same in every unit)."""
    if _is_keyword(value):
        return read_percent(value), None
    samples = read_count("a number of samples")
    if unit == NrAccessesUnit.SAMPLES:
        return samples(value), NrAccessesUnit.SAMPLES
    if isinstance(value, str) and value.strip().endswith("samples"):
        return samples(value.strip()[: -len("samples")].strip()), NrAccessesUnit.SAMPLES
    return checked_percent(units.parse_percent(value)), NrAccessesUnit.PERCENT


def age_value(value: object, unit: str | None) -> tuple[float, str | None]:
    """An age bound and the unit it carried (``3 aggr_intervals`` or a duration in usec)."""
    if _is_keyword(value):
        return read_us(value), None
    intervals = read_count("a number of aggregation intervals")
    if unit == AgeUnit.AGGR_INTERVALS:
        return intervals(value), AgeUnit.AGGR_INTERVALS
    if isinstance(value, str) and value.strip().endswith("aggr_intervals"):
        text = value.strip()[: -len("aggr_intervals")].strip()
        return intervals(text), AgeUnit.AGGR_INTERVALS
    return read_us(value), AgeUnit.USEC
