"""Scheme files: damo's single-line text form and its JSON/YAML (``--schemes``) form.

Text form: one scheme per line, ``#`` comments and blank lines ignored, whitespace-separated
fields (damo's deprecated single-line DAMOS format, inspired by the kernel's debugfs ``schemes``)::

    <min size> <max size> <min freq %> <max freq %> <min age> <max age> <action>
        [<quota ms> <quota size> <quota reset interval>]                         (18 fields)
        [<weight size> <weight nr_accesses> <weight age>]                        (permil)
        [<wmark metric> <wmark interval> <high> <mid> <low>]                     (permil)

damo's shorter forms are accepted too: 9 fields (+ size quota, reset interval), 12 (+ weights),
17 (+ watermarks), all without the time quota. Sizes take ``B/K/M/G/T`` (also ``KiB``, ``KB``),
times ``us/ms/s/m/h/d`` (a bare number is µs for ages and watermark intervals, ms for quota time
and reset interval), frequencies are percent of the samples per aggregation (``%`` optional),
``min``/``max`` mean the smallest/largest value. Example: ``4K max 0 0 60s max pageout``.

JSON/YAML form: a list of schemes in damo's ``--schemes`` layout (``access_pattern``, ``action``,
``apply_interval_us``, ``quotas``, ``watermarks``, ``filters``), or a document with a
``schemes`` list, or damo's whole ``kdamonds`` document.

Every error is a :class:`SchemeFileError` whose one-line message names the line (or JSON path) and
field that is wrong.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pydamon.damos.scheme import (
    ACTIONS,
    ULONG_MAX,
    AccessPattern,
    AgeUnit,
    Filter,
    FilterType,
    GoalMetric,
    GoalTuner,
    NrAccessesUnit,
    Quota,
    QuotaGoal,
    Scheme,
    SchemeError,
    Watermarks,
    WmarkMetric,
)


class SchemeFileError(ValueError):
    """A scheme file or text that cannot be parsed; the message is one line naming where."""


# -- values with units -------------------------------------------------------------------------

_SIZE_UNITS = {
    "B": 1,
    "K": 1 << 10,
    "KB": 1 << 10,
    "KIB": 1 << 10,
    "M": 1 << 20,
    "MB": 1 << 20,
    "MIB": 1 << 20,
    "G": 1 << 30,
    "GB": 1 << 30,
    "GIB": 1 << 30,
    "T": 1 << 40,
    "TB": 1 << 40,
    "TIB": 1 << 40,
    "P": 1 << 50,
    "PB": 1 << 50,
    "PIB": 1 << 50,
}
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
_NUMBER = r"[+-]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_VALUE_UNIT = re.compile(rf"^\s*({_NUMBER})\s*([A-Za-z%]*)\s*$")


def _number(text: str) -> float:
    value = float(text.replace(",", ""))
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def _keyword(value: object, min_value: int, max_value: int) -> int | None:
    if isinstance(value, str):
        word = value.strip().lower()
        if word == "min":
            return min_value
        if word == "max":
            return max_value
    return None


def _to_int(value: float, what: str) -> int:
    if value < 0:
        raise ValueError(f"{what} must not be negative")
    if value >= ULONG_MAX:
        return ULONG_MAX
    return int(value)


def parse_size(value: object) -> int:
    """Bytes from ``4096``, ``4K``, ``1.5 GiB``, ``min``, ``max``."""
    kw = _keyword(value, 0, ULONG_MAX)
    if kw is not None:
        return kw
    if isinstance(value, bool):
        raise ValueError("not a size")
    if isinstance(value, int | float):
        return _to_int(float(value), "a size")
    if not isinstance(value, str):
        raise ValueError("not a size")
    m = _VALUE_UNIT.match(value)
    if not m:
        raise ValueError("not a size (use e.g. 4096, 4K, 2M, 1G, min, max)")
    unit = m.group(2).upper() or "B"
    if unit not in _SIZE_UNITS:
        raise ValueError(f"unknown size unit {m.group(2)!r} (use B, K, M, G, T)")
    return _to_int(_number(m.group(1)) * _SIZE_UNITS[unit], "a size")


def parse_time(value: object, default_unit: str = "us", out_unit: str = "us") -> int:
    """A time in ``out_unit`` from ``100ms``, ``1h 30m``, ``60 s``, a bare number (in
    ``default_unit``), ``min`` or ``max``."""
    kw = _keyword(value, 0, ULONG_MAX)
    if kw is not None:
        return kw
    if isinstance(value, bool):
        raise ValueError("not a time")
    scale = _TIME_UNITS_NS[out_unit]
    if isinstance(value, int | float):
        return _to_int(float(value) * _TIME_UNITS_NS[default_unit] / scale, "a time")
    if not isinstance(value, str):
        raise ValueError("not a time")
    # "1 h 30 m" / "1h30m" / "90s": pairs of number and unit
    parts = re.findall(rf"({_NUMBER})\s*([A-Za-z]*)", value)
    rest = re.sub(rf"({_NUMBER})\s*([A-Za-z]*)", "", value).strip()
    if not parts or rest:
        raise ValueError("not a time (use e.g. 500us, 100ms, 60s, 5m, 1h, 1d, min, max)")
    total_ns = 0.0
    for number, unit in parts:
        unit = unit or default_unit
        if unit not in _TIME_UNITS_NS:
            raise ValueError(f"unknown time unit {unit!r} (use us, ms, s, m, h, d)")
        total_ns += _number(number) * _TIME_UNITS_NS[unit]
    return _to_int(total_ns / scale, "a time")


def parse_percent(value: object) -> float:
    """Percent from ``80``, ``80%``, ``12.5 %``, ``min`` (0), ``max``."""
    kw = _keyword(value, 0, ULONG_MAX)
    if kw is not None:
        return kw
    if isinstance(value, bool):
        raise ValueError("not a percentage")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        m = _VALUE_UNIT.match(value)
        if not m or m.group(2) not in ("", "%"):
            raise ValueError("not a percentage (use e.g. 0, 5, 80%, min, max)")
        number = _number(m.group(1))
    else:
        raise ValueError("not a percentage")
    if number < 0 or not math.isfinite(number):
        raise ValueError("a percentage must not be negative")
    if number >= ULONG_MAX:
        return ULONG_MAX
    return int(number) if number == int(number) else number


def parse_count(value: object, what: str = "a number") -> int:
    kw = _keyword(value, 0, ULONG_MAX)
    if kw is not None:
        return kw
    if isinstance(value, bool):
        raise ValueError(f"not {what}")
    if isinstance(value, int | float):
        return _to_int(float(value), what)
    if isinstance(value, str):
        m = _VALUE_UNIT.match(value)
        if m and m.group(2) == "":
            return _to_int(_number(m.group(1)), what)
    raise ValueError(f"not {what}")


def parse_permil(value: object) -> int:
    """Per mille from ``500``, or a percentage ``50 %`` / ``50%``."""
    kw = _keyword(value, 0, ULONG_MAX)
    if kw is not None:
        return kw
    if isinstance(value, str) and value.strip().endswith("%"):
        return int(float(parse_percent(value)) * 10)
    return parse_count(value, "a per-mille value")


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("y", "yes", "true", "1"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("n", "no", "false", "0"):
        return False
    raise ValueError("not a boolean (use true or false)")


# -- formatting --------------------------------------------------------------------------------


def format_size(sz: int) -> str:
    if sz >= ULONG_MAX:
        return "max"
    for unit in ("T", "G", "M", "K"):
        if sz and sz % _SIZE_UNITS[unit] == 0:
            return f"{sz // _SIZE_UNITS[unit]}{unit}"
    return str(sz)


def format_time_us(us: int) -> str:
    if us >= ULONG_MAX:
        return "max"
    ns = us * 1000
    for unit in ("d", "h", "m", "s", "ms"):
        if ns and ns % _TIME_UNITS_NS[unit] == 0:
            return f"{ns // _TIME_UNITS_NS[unit]}{unit}"
    return f"{us}us"


def format_time_ms(ms: int) -> str:
    return "max" if ms >= ULONG_MAX else format_time_us(ms * 1000)


def format_percent(p: float) -> str:
    if p >= ULONG_MAX:
        return "max"
    return str(int(p)) if p == int(p) else repr(float(p))


# -- single-line text form ---------------------------------------------------------------------

_PATTERN_FIELDS = ("min size", "max size", "min frequency", "max frequency", "min age", "max age")
_NR_FIELDS = (7, 9, 12, 17, 18)


def _line_field_names(n: int) -> list[str]:
    names = list(_PATTERN_FIELDS) + ["action"]
    if n == 18:
        names += ["quota time", "quota size", "quota reset interval"]
    elif n >= 9:
        names += ["quota size", "quota reset interval"]
    if n >= 12:
        names += ["size weight", "nr_accesses weight", "age weight"]
    if n >= 17:
        names += ["watermark metric", "watermark interval", "high watermark", "mid watermark"]
        names += ["low watermark"]
    return names


def parse_scheme_line(line: str, where: str = "line 1") -> Scheme:
    """One scheme from a line of the text form (no comment handling)."""
    fields = line.split()
    if len(fields) not in _NR_FIELDS:
        raise SchemeFileError(
            f"{where}: expected 7, 9, 12, 17 or 18 fields, got {len(fields)}: {line.strip()!r}"
        )
    names = _line_field_names(len(fields))
    values = dict(zip(names, fields))

    def field(name: str, parser: Any, *args: Any) -> Any:
        index = names.index(name) + 1
        try:
            return parser(values[name], *args)
        except (ValueError, OverflowError) as err:
            raise SchemeFileError(
                f"{where}: field {index} ({name}) {values[name]!r}: {err}"
            ) from None

    pattern = AccessPattern(
        min_sz_bytes=field("min size", parse_size),
        max_sz_bytes=field("max size", parse_size),
        min_nr_accesses=field("min frequency", parse_percent),
        max_nr_accesses=field("max frequency", parse_percent),
        nr_accesses_unit=NrAccessesUnit.PERCENT,
        min_age=field("min age", parse_time),
        max_age=field("max age", parse_time),
        age_unit=AgeUnit.USEC,
    )
    action = field("action", _parse_action)
    quota = Quota()
    wmarks = Watermarks()
    if "quota time" in values:
        quota.ms = field("quota time", parse_time, "ms", "ms")
    if "quota size" in values:
        quota.sz = field("quota size", parse_size)
        quota.reset_interval_ms = field("quota reset interval", parse_time, "ms", "ms")
    if "size weight" in values:
        quota.weight_sz_permil = field("size weight", parse_count, "a weight")
        quota.weight_nr_accesses_permil = field("nr_accesses weight", parse_count, "a weight")
        quota.weight_age_permil = field("age weight", parse_count, "a weight")
    if "watermark metric" in values:
        wmarks = Watermarks(
            metric=field("watermark metric", _parse_wmark_metric),
            interval_us=field("watermark interval", parse_time),
            high=field("high watermark", parse_permil),
            mid=field("mid watermark", parse_permil),
            low=field("low watermark", parse_permil),
        )
    try:
        return Scheme(pattern=pattern, action=action, quota=quota, wmarks=wmarks)
    except SchemeError as err:
        raise SchemeFileError(f"{where}: {err}") from None


def _parse_action(text: object) -> str:
    word = str(text).strip().lower()
    if word not in ACTIONS:
        raise ValueError(f"unknown action; use one of {', '.join(ACTIONS)}")
    return word


def _parse_wmark_metric(text: object) -> WmarkMetric:
    word = str(text).strip().lower()
    if word in ("0", "none"):
        return WmarkMetric.NONE
    if word in ("1", "free_mem_rate"):
        return WmarkMetric.FREE_MEM_RATE
    raise ValueError("unknown watermark metric; use none or free_mem_rate")


def parse_schemes_text(text: str, source: str = "<schemes>") -> list[Scheme]:
    """Schemes from text in the single-line form (``#`` comments and blank lines ignored)."""
    schemes = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        schemes.append(parse_scheme_line(line, f"{source}:{lineno}"))
    return schemes


def format_scheme_line(scheme: Scheme, attrs: Any = None) -> str:
    """The text form of ``scheme`` (7 fields, or 18 with a quota or watermarks).

    A pattern in the kernel's units (samples, aggregation intervals) needs ``attrs`` (an
    :class:`~pydamon.core.attrs.Attrs`) to convert to percent and time. Filters, quota goals and
    an apply interval have no text form: write JSON or YAML for those.
    """
    if scheme.filters or scheme.quota.goals or scheme.apply_interval_us:
        raise SchemeError(
            "filters, quota goals and apply intervals have no single-line form; use JSON or YAML"
        )
    p = scheme.pattern
    min_nr, max_nr = p.min_nr_accesses, p.max_nr_accesses
    min_age, max_age = p.min_age, p.max_age
    if p.nr_accesses_unit != NrAccessesUnit.PERCENT or p.age_unit != AgeUnit.USEC:
        if attrs is None:
            raise SchemeError(
                "a pattern in samples/aggregation intervals needs the monitoring attributes to "
                "be written in percent and time"
            )
        max_samples = attrs.aggr_interval_us / (attrs.sample_interval_us or 1)
        if p.nr_accesses_unit == NrAccessesUnit.SAMPLES:
            min_nr = _samples_to_percent(min_nr, max_samples)
            max_nr = _samples_to_percent(max_nr, max_samples)
        if p.age_unit == AgeUnit.AGGR_INTERVALS:
            min_age = ULONG_MAX if min_age >= ULONG_MAX else min_age * attrs.aggr_interval_us
            max_age = ULONG_MAX if max_age >= ULONG_MAX else max_age * attrs.aggr_interval_us
    fields = [
        format_size(int(p.min_sz_bytes)) if p.min_sz_bytes else "min",
        format_size(int(p.max_sz_bytes)),
        format_percent(min_nr),
        format_percent(max_nr),
        format_time_us(int(min_age)) if min_age else "min",
        format_time_us(int(max_age)),
        str(scheme.action),
    ]
    q, w = scheme.quota, scheme.wmarks
    if q != Quota() or w != Watermarks():
        fields += [
            format_time_ms(q.ms) if q.ms else "0",
            format_size(q.sz) if q.sz else "0",
            format_time_ms(q.reset_interval_ms) if q.reset_interval_ms else "0",
            str(q.weight_sz_permil),
            str(q.weight_nr_accesses_permil),
            str(q.weight_age_permil),
            str(w.metric),
            format_time_us(w.interval_us) if w.interval_us else "0",
            str(w.high),
            str(w.mid),
            str(w.low),
        ]
    return " ".join(fields)


def _samples_to_percent(samples: float, max_samples: float) -> float:
    if samples >= ULONG_MAX:
        return ULONG_MAX
    return samples * 100 / max_samples if max_samples else 0


def format_schemes_text(schemes: Iterable[Scheme], attrs: Any = None) -> str:
    return "".join(format_scheme_line(s, attrs) + "\n" for s in schemes)


# -- JSON / YAML form (damo's --schemes) -------------------------------------------------------


class _Path:
    """Where in a JSON document we are, for error messages."""

    def __init__(self, source: str, parts: Sequence[str] = ()) -> None:
        self.source = source
        self.parts = list(parts)

    def __truediv__(self, part: object) -> _Path:
        return _Path(self.source, [*self.parts, str(part)])

    def error(self, msg: str) -> SchemeFileError:
        where = ".".join(self.parts) or "top level"
        return SchemeFileError(f"{self.source}: {where}: {msg}")


def _get(kv: Mapping[str, Any], key: str, path: _Path, parser: Any, *args: Any) -> Any:
    try:
        return parser(kv[key], *args)
    except (ValueError, OverflowError, TypeError) as err:
        raise (path / key).error(f"{kv[key]!r}: {err}") from None


def _mapping(value: object, path: _Path) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise path.error(f"expected an object, got {type(value).__name__}")
    return value


def _list(value: object, path: _Path) -> list[Any]:
    if not isinstance(value, list):
        raise path.error(f"expected a list, got {type(value).__name__}")
    return value


def _is_keyword(value: object) -> bool:
    return isinstance(value, str) and value.strip().lower() in ("min", "max")


def _pattern_range(
    pattern: AccessPattern,
    kv: Mapping[str, Any],
    name: str,
    path: _Path,
    value_fn: Callable[[object, str | None], tuple[float, str | None]],
    default_unit: str | None,
) -> str | None:
    """Set ``pattern.min_<name>``/``max_<name>`` from ``kv[name]``; return the unit the values
    carried (min and max must agree), or None."""
    bounds = _mapping(kv[name], path / name)
    units = set()
    for key in ("min", "max"):
        if key in bounds:
            value, unit = _get(bounds, key, path / name, value_fn, default_unit)
            if unit is not None:
                units.add(unit)
            setattr(pattern, f"{key}_{name}", value)
    if len(units) > 1:
        raise (path / name).error("min and max must use the same unit")
    return units.pop() if units else None


def _nr_accesses_value(value: object, unit: str | None) -> tuple[float, str | None]:
    if _is_keyword(value):
        return parse_percent(value), None  # min/max mean the same in every unit
    if unit == NrAccessesUnit.SAMPLES:
        return parse_count(value, "a number of samples"), NrAccessesUnit.SAMPLES
    if isinstance(value, str) and value.strip().endswith("samples"):
        return parse_count(value.strip()[: -len("samples")].strip(), "a number of samples"), (
            NrAccessesUnit.SAMPLES
        )
    return parse_percent(value), NrAccessesUnit.PERCENT


def _age_value(value: object, unit: str | None) -> tuple[float, str | None]:
    if _is_keyword(value):
        return parse_time(value), None
    if unit == AgeUnit.AGGR_INTERVALS:
        return parse_count(value, "a number of aggregation intervals"), AgeUnit.AGGR_INTERVALS
    if isinstance(value, str) and value.strip().endswith("aggr_intervals"):
        text = value.strip()[: -len("aggr_intervals")].strip()
        return parse_count(text, "a number of aggregation intervals"), AgeUnit.AGGR_INTERVALS
    return parse_time(value), AgeUnit.USEC


def _pattern_from_kv(kv: Mapping[str, Any], path: _Path) -> AccessPattern:
    pattern = AccessPattern()
    if "sz_bytes" in kv:
        sz = _mapping(kv["sz_bytes"], path / "sz_bytes")
        pattern.min_sz_bytes = _get(sz, "min", path / "sz_bytes", parse_size) if "min" in sz else 0
        if "max" in sz:
            pattern.max_sz_bytes = _get(sz, "max", path / "sz_bytes", parse_size)
    nr_unit = kv.get("nr_accesses_unit")
    if nr_unit not in (None, *NrAccessesUnit):
        raise (path / "nr_accesses_unit").error(f"{nr_unit!r}: use percent or samples")
    pattern.nr_accesses_unit = NrAccessesUnit(nr_unit or NrAccessesUnit.PERCENT)
    if "nr_accesses" in kv:
        unit = _pattern_range(pattern, kv, "nr_accesses", path, _nr_accesses_value, nr_unit)
        if unit:
            pattern.nr_accesses_unit = NrAccessesUnit(unit)
    age_unit = kv.get("age_unit")
    if age_unit not in (None, *AgeUnit):
        raise (path / "age_unit").error(f"{age_unit!r}: use usec or aggr_intervals")
    pattern.age_unit = AgeUnit(age_unit or AgeUnit.USEC)
    if "age" in kv:
        unit = _pattern_range(pattern, kv, "age", path, _age_value, age_unit)
        if unit:
            pattern.age_unit = AgeUnit(unit)
    return pattern


def _enum(enum_type: Any, what: str) -> Any:
    def parse(value: object) -> Any:
        try:
            return enum_type(str(value).strip().lower())
        except ValueError:
            raise ValueError(f"unknown {what}; use one of {', '.join(enum_type)}") from None

    return parse


def _goal_from_kv(kv: Mapping[str, Any], path: _Path) -> QuotaGoal:
    goal = QuotaGoal()
    if "metric" in kv:
        goal.metric = _get(kv, "metric", path, _enum(GoalMetric, "quota goal metric"))
    if goal.metric == GoalMetric.SOME_MEM_PSI_US:
        target_parser: Any = parse_time
    else:
        target_parser = parse_count
    key = "target_value" if "target_value" in kv else "target_value_bp"
    if key not in kv:
        raise (path / "target_value").error("missing")
    goal.target_value = _get(kv, key, path, target_parser)
    for key in ("current_value", "current_value_bp"):
        if key in kv and kv[key] is not None:
            goal.current_value = _get(kv, key, path, parse_count)
    if kv.get("nid") is not None:
        goal.nid = _get(kv, "nid", path, parse_count, "a node id")
    for key in ("path", "memcg_path"):
        if kv.get(key) is not None:
            goal.path = str(kv[key])
    return goal


def _quota_from_kv(kv: Mapping[str, Any], path: _Path) -> Quota:
    q = Quota()
    if "time_ms" in kv:
        q.ms = _get(kv, "time_ms", path, parse_time, "ms", "ms")
    if "sz_bytes" in kv:
        q.sz = _get(kv, "sz_bytes", path, parse_size)
    if "reset_interval_ms" in kv:
        q.reset_interval_ms = _get(kv, "reset_interval_ms", path, parse_time, "ms", "ms")
    if "weights" in kv:
        w = _mapping(kv["weights"], path / "weights")
        for key, attr in (
            ("sz_permil", "weight_sz_permil"),
            ("nr_accesses_permil", "weight_nr_accesses_permil"),
            ("age_permil", "weight_age_permil"),
        ):
            if key in w:
                setattr(q, attr, _get(w, key, path / "weights", parse_permil))
    if kv.get("goals") is not None:
        goals = _list(kv["goals"], path / "goals")
        q.goals = [
            _goal_from_kv(_mapping(g, path / "goals" / i), path / "goals" / i)
            for i, g in enumerate(goals)
        ]
    if kv.get("goal_tuner") is not None:
        q.goal_tuner = _get(kv, "goal_tuner", path, _enum(GoalTuner, "goal tuner"))
    return q


def _wmarks_from_kv(kv: Mapping[str, Any], path: _Path) -> Watermarks:
    w = Watermarks()
    if "metric" in kv:
        w.metric = _get(kv, "metric", path, _parse_wmark_metric)
    if "interval_us" in kv:
        w.interval_us = _get(kv, "interval_us", path, parse_time)
    for key in ("high", "mid", "low"):
        for name in (f"{key}_permil", key):
            if name in kv:
                setattr(w, key, _get(kv, name, path, parse_permil))
    return w


def _filter_from_kv(kv: Mapping[str, Any], path: _Path) -> Filter:
    key = "filter_type" if "filter_type" in kv else "type"
    if key not in kv:
        raise (path / "filter_type").error("missing")
    ftype = _get(kv, key, path, _enum(FilterType, "filter type"))
    f = Filter(type=ftype)
    if "matching" in kv:
        f.matching = _get(kv, "matching", path, parse_bool)
    for key in ("allow", "filter_pass"):
        if key in kv:
            f.allow = _get(kv, key, path, parse_bool)
    if ftype == FilterType.MEMCG:
        if not kv.get("memcg_path"):
            raise (path / "memcg_path").error("a memcg filter needs a memcg_path")
        f.memcg_path = str(kv["memcg_path"])
    elif ftype == FilterType.ADDR:
        if "address_range" not in kv:
            raise (path / "address_range").error("an addr filter needs an address_range")
        ar = _mapping(kv["address_range"], path / "address_range")
        for k in ("start", "end"):
            if k not in ar:
                raise (path / "address_range" / k).error("missing")
        f.addr_start = _get(ar, "start", path / "address_range", _parse_addr)
        f.addr_end = _get(ar, "end", path / "address_range", _parse_addr)
    elif ftype == FilterType.TARGET:
        if kv.get("damon_target_idx") is None:
            raise (path / "damon_target_idx").error("a target filter needs a damon_target_idx")
        f.target_idx = _get(kv, "damon_target_idx", path, parse_count, "a target index")
    elif ftype == FilterType.HUGEPAGE_SIZE:
        sizes = _list(kv.get("hugepage_size"), path / "hugepage_size")
        if len(sizes) != 2:
            raise (path / "hugepage_size").error("expected [min, max]")
        try:
            f.min_sz, f.max_sz = parse_size(sizes[0]), parse_size(sizes[1])
        except (ValueError, OverflowError) as err:
            raise (path / "hugepage_size").error(f"{sizes!r}: {err}") from None
    return f


def _parse_addr(value: object) -> int:
    if isinstance(value, str):
        text = value.strip().replace(",", "")
        if text.lower().startswith("0x"):
            return int(text, 16)
    return parse_size(value)


def scheme_from_kv(kv: object, path: _Path | None = None) -> Scheme:
    """A scheme from damo's JSON layout (a dict)."""
    path = path or _Path("<schemes>")
    kv = _mapping(kv, path)
    pattern = (
        _pattern_from_kv(
            _mapping(kv["access_pattern"], path / "access_pattern"), path / "access_pattern"
        )
        if kv.get("access_pattern") is not None
        else AccessPattern()
    )
    action: Any = _get(kv, "action", path, _parse_action) if "action" in kv else "stat"
    apply_interval_us = 0
    if kv.get("apply_interval_us") is not None:
        apply_interval_us = _get(kv, "apply_interval_us", path, parse_time)
    quota = (
        _quota_from_kv(_mapping(kv["quotas"], path / "quotas"), path / "quotas")
        if kv.get("quotas") is not None
        else Quota()
    )
    wmarks = (
        _wmarks_from_kv(_mapping(kv["watermarks"], path / "watermarks"), path / "watermarks")
        if kv.get("watermarks") is not None
        else Watermarks()
    )
    filters = []
    if kv.get("filters") is not None:
        for i, fkv in enumerate(_list(kv["filters"], path / "filters")):
            filters.append(
                _filter_from_kv(_mapping(fkv, path / "filters" / i), path / "filters" / i)
            )
    target_nid = None
    if kv.get("target_nid") is not None:
        target_nid = _get(kv, "target_nid", path, parse_count, "a node id")
    try:
        return Scheme(
            pattern=pattern,
            action=action,
            apply_interval_us=apply_interval_us,
            quota=quota,
            wmarks=wmarks,
            filters=filters,
            target_nid=target_nid,
        )
    except SchemeError as err:
        raise path.error(str(err)) from None


def _max_or(value: float, fmt: Any) -> Any:
    return "max" if value >= ULONG_MAX else fmt(value)


def _plain_number(value: float) -> int | float:
    return int(value) if value == int(value) else float(value)


def scheme_to_kv(scheme: Scheme) -> dict[str, Any]:
    """damo's JSON layout of ``scheme`` (exact values: ints, ``max``, unit-suffixed strings)."""
    p = scheme.pattern
    if p.nr_accesses_unit == NrAccessesUnit.PERCENT:
        nr = {
            k: _max_or(v, _plain_number)
            for k, v in (("min", p.min_nr_accesses), ("max", p.max_nr_accesses))
        }
    else:
        nr = {
            k: _max_or(v, lambda x: f"{int(x)} samples")
            for k, v in (("min", p.min_nr_accesses), ("max", p.max_nr_accesses))
        }
    if p.age_unit == AgeUnit.USEC:
        age = {k: _max_or(v, int) for k, v in (("min", p.min_age), ("max", p.max_age))}
    else:
        age = {
            k: _max_or(v, lambda x: f"{int(x)} aggr_intervals")
            for k, v in (("min", p.min_age), ("max", p.max_age))
        }
    q, w = scheme.quota, scheme.wmarks
    kv: dict[str, Any] = {
        "action": str(scheme.action),
        "access_pattern": {
            "sz_bytes": {"min": _max_or(p.min_sz_bytes, int), "max": _max_or(p.max_sz_bytes, int)},
            "nr_accesses_unit": str(p.nr_accesses_unit),
            "nr_accesses": nr,
            "age_unit": str(p.age_unit),
            "age": age,
        },
        "apply_interval_us": scheme.apply_interval_us,
        "quotas": {
            "time_ms": q.ms,
            "sz_bytes": q.sz,
            "reset_interval_ms": q.reset_interval_ms,
            "goals": [
                {
                    "metric": str(g.metric),
                    "nid": g.nid,
                    "path": g.path,
                    "target_value": g.target_value,
                    "current_value": g.current_value,
                }
                for g in q.goals
            ],
            "goal_tuner": str(q.goal_tuner),
            "weights": {
                "sz_permil": q.weight_sz_permil,
                "nr_accesses_permil": q.weight_nr_accesses_permil,
                "age_permil": q.weight_age_permil,
            },
        },
        "watermarks": {
            "metric": str(w.metric),
            "interval_us": w.interval_us,
            "high_permil": w.high,
            "mid_permil": w.mid,
            "low_permil": w.low,
        },
        "filters": [_filter_to_kv(f) for f in scheme.filters],
    }
    if scheme.target_nid is not None:
        kv["target_nid"] = scheme.target_nid
    return kv


def _filter_to_kv(f: Filter) -> dict[str, Any]:
    return {
        "filter_type": str(f.type),
        "matching": f.matching,
        "allow": f.allow,
        "memcg_path": f.memcg_path if f.type == FilterType.MEMCG else None,
        "address_range": {"start": f.addr_start, "end": f.addr_end}
        if f.type == FilterType.ADDR
        else None,
        "damon_target_idx": f.target_idx if f.type == FilterType.TARGET else None,
        "hugepage_size": [f.min_sz, f.max_sz] if f.type == FilterType.HUGEPAGE_SIZE else None,
    }


def _schemes_list(doc: object, path: _Path) -> tuple[list[Any], _Path]:
    """Find the list of schemes in a document: a list, ``{"schemes": [...]}``, or damo's
    ``{"kdamonds": [{"contexts": [{"schemes": [...]}]}]}`` (all contexts' schemes)."""
    if isinstance(doc, list):
        return doc, path
    if isinstance(doc, Mapping):
        if "schemes" in doc:
            return _list(doc["schemes"], path / "schemes"), path / "schemes"
        if "kdamonds" in doc:
            found: list[Any] = []
            for ki, kd in enumerate(_list(doc["kdamonds"], path / "kdamonds")):
                kpath = path / "kdamonds" / ki
                for ci, ctx in enumerate(
                    _list(_mapping(kd, kpath).get("contexts", []), kpath / "contexts")
                ):
                    cpath = kpath / "contexts" / ci
                    found += _list(_mapping(ctx, cpath).get("schemes", []), cpath / "schemes")
            return found, path
        if "action" in doc or "access_pattern" in doc:
            return [doc], path
    raise path.error("expected a list of schemes, or an object with a 'schemes' list")


def parse_schemes_json(text: str, source: str = "<schemes>") -> list[Scheme]:
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        detail = (
            f"line {err.lineno} column {err.colno}: {err.msg}"
            if isinstance(err, json.JSONDecodeError)
            else "nested too deeply"
        )
        raise SchemeFileError(f"{source}: invalid JSON at {detail}") from None
    return schemes_from_doc(doc, source)


def parse_schemes_yaml(text: str, source: str = "<schemes>") -> list[Scheme]:
    try:
        import yaml
    except ImportError:
        raise SchemeFileError(
            f"{source}: reading YAML needs PyYAML; install it (pip install 'pydamon[yaml]') or "
            "use JSON"
        ) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "syntax error"
        raise SchemeFileError(f"{source}: invalid YAML{at}: {problem}") from None
    except RecursionError:
        raise SchemeFileError(f"{source}: invalid YAML: nested too deeply") from None
    return schemes_from_doc(doc, source)


def schemes_from_doc(doc: object, source: str = "<schemes>") -> list[Scheme]:
    """Schemes from a parsed JSON/YAML document."""
    root = _Path(source)
    items, path = _schemes_list(doc, root)
    return [scheme_from_kv(item, path / i) for i, item in enumerate(items)]


def format_schemes_json(schemes: Iterable[Scheme], indent: int | None = 4) -> str:
    return json.dumps([scheme_to_kv(s) for s in schemes], indent=indent) + "\n"


def format_schemes_yaml(schemes: Iterable[Scheme]) -> str:
    try:
        import yaml
    except ImportError:
        raise SchemeFileError(
            "writing YAML needs PyYAML; install it (pip install 'pydamon[yaml]') or use JSON"
        ) from None
    return str(yaml.safe_dump([scheme_to_kv(s) for s in schemes], sort_keys=False))


def detect_format(text: str, filename: str | None = None) -> str:
    """``json``, ``yaml`` or ``text``: by file extension, else by content."""
    if filename:
        ext = os.path.splitext(filename)[1].lower()
        if ext == ".json":
            return "json"
        if ext in (".yaml", ".yml"):
            return "yaml"
        if ext in (".txt", ".damos", ".schemes"):
            return "text"
    stripped = text.lstrip()
    if stripped[:1] in ("[", "{"):
        return "json"
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        # YAML documents have "key:" or "- " items; scheme lines never contain ':'
        if line.startswith("- ") or line == "-" or line.startswith("---") or ":" in line:
            return "yaml"
        return "text"
    return "text"


def parse_schemes(text: str, fmt: str | None = None, source: str = "<schemes>") -> list[Scheme]:
    """Schemes from text in any form (``fmt``: ``text``, ``json``, ``yaml`` or None to detect)."""
    fmt = fmt or detect_format(text)
    if fmt == "json":
        return parse_schemes_json(text, source)
    if fmt == "yaml":
        return parse_schemes_yaml(text, source)
    if fmt == "text":
        return parse_schemes_text(text, source)
    raise SchemeFileError(f"{source}: unknown scheme format {fmt!r}; use text, json or yaml")


def load_schemes(path: str, fmt: str | None = None) -> list[Scheme]:
    """Schemes from a file (format by extension or content)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise SchemeFileError(f"{path}: cannot read scheme file: {reason}") from None
    return parse_schemes(text, fmt or detect_format(text, path), path)


def dump_schemes(schemes: Sequence[Scheme], fmt: str = "json", attrs: Any = None) -> str:
    """Schemes as ``text``, ``json`` or ``yaml``."""
    if fmt == "json":
        return format_schemes_json(schemes)
    if fmt == "yaml":
        return format_schemes_yaml(schemes)
    if fmt == "text":
        try:
            return format_schemes_text(schemes, attrs)
        except SchemeError as err:
            raise SchemeFileError(str(err)) from None
    raise SchemeFileError(f"unknown scheme format {fmt!r}; use text, json or yaml")
