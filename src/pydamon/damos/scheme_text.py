"""The scheme text form: damo's single-line form, one scheme per line.

``#`` comments and blank lines are ignored; fields are whitespace-separated (damo's deprecated
single-line DAMOS format, inspired by the kernel's debugfs ``schemes``)::

    <min size> <max size> <min freq %> <max freq %> <min age> <max age> <action>
        [<quota ms> <quota size> <quota reset interval>]                         (18 fields)
        [<weight size> <weight nr_accesses> <weight age>]                        (permil)
        [<wmark metric> <wmark interval> <high> <mid> <low>]                     (permil)

damo's shorter forms are accepted too: 9 fields (+ size quota, reset interval), 12 (+ weights),
17 (+ watermarks), all without the time quota. Values take every form of :mod:`pydamon.units`
(``4K``, ``2MiB``, ``60s``, ``1d``, ``80%``); a bare time is µs for ages and watermark intervals,
ms for quota time and reset interval; ``min``/``max`` mean the smallest/largest value. Example:
``4K max 0 0 60s max pageout``. Errors are one-line :class:`SchemeFileError`\\ s naming the line
and field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pydamon.damos.fields import (
    SchemeFileError,
    read_count,
    read_ms,
    read_percent,
    read_size,
    read_us,
    read_wmark,
)
from pydamon.damos.kinds import AgeUnit, NrAccessesUnit, parse_action, parse_wmark_metric
from pydamon.damos.scheme import AccessPattern, Quota, Scheme, SchemeError, Watermarks
from pydamon.units import ULONG_MAX, format_bytes, format_duration_us, format_percent

if TYPE_CHECKING:
    from pydamon.core.attrs import Attrs

_PATTERN_FIELDS = ("min size", "max size", "min frequency", "max frequency", "min age", "max age")
_NR_FIELDS = (7, 9, 12, 17, 18)
#: The line's field of a scheme field named in a :class:`SchemeError` (JSON layout names).
_TEXT_FIELD_OF = {
    "access_pattern.sz_bytes": "min size",
    "access_pattern.nr_accesses": "min frequency",
    "access_pattern.age": "min age",
    "watermarks.interval_us": "watermark interval",
    "watermarks": "high watermark",
}


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

    def field(name: str, parser: Callable[[object], Any]) -> Any:
        index = names.index(name) + 1
        try:
            return parser(values[name])
        except (ValueError, OverflowError) as err:
            raise SchemeFileError(
                f"{where}: field {index} ({name}) {values[name]!r}: {err}"
            ) from None

    pattern = AccessPattern(
        min_sz_bytes=field("min size", read_size),
        max_sz_bytes=field("max size", read_size),
        min_nr_accesses=field("min frequency", read_percent),
        max_nr_accesses=field("max frequency", read_percent),
        nr_accesses_unit=NrAccessesUnit.PERCENT,
        min_age=field("min age", read_us),
        max_age=field("max age", read_us),
        age_unit=AgeUnit.USEC,
    )
    action = field("action", parse_action)
    quota = Quota()
    wmarks = Watermarks()
    if "quota time" in values:
        quota.ms = field("quota time", read_ms)
    if "quota size" in values:
        quota.sz = field("quota size", read_size)
        quota.reset_interval_ms = field("quota reset interval", read_ms)
    if "size weight" in values:
        quota.weight_sz_permil = field("size weight", read_count("a weight"))
        quota.weight_nr_accesses_permil = field("nr_accesses weight", read_count("a weight"))
        quota.weight_age_permil = field("age weight", read_count("a weight"))
    if "watermark metric" in values:
        wmarks = Watermarks(
            metric=field("watermark metric", parse_wmark_metric),
            interval_us=field("watermark interval", read_us),
            high=field("high watermark", read_wmark),
            mid=field("mid watermark", read_wmark),
            low=field("low watermark", read_wmark),
        )
    try:
        return Scheme(pattern=pattern, action=action, quota=quota, wmarks=wmarks)
    except SchemeError as err:
        name = _TEXT_FIELD_OF.get(err.field or "")
        at = f" field {names.index(name) + 1} ({name}):" if name in names else ""
        raise SchemeFileError(f"{where}:{at} {err}") from None


def parse_schemes_text(text: str, source: str = "<schemes>") -> list[Scheme]:
    """Schemes from text in the single-line form (``#`` comments and blank lines ignored)."""
    schemes = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        schemes.append(parse_scheme_line(line, f"{source}:{lineno}"))
    return schemes


def format_scheme_line(scheme: Scheme, attrs: Attrs | None = None) -> str:
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
        format_bytes(p.min_sz_bytes, exact=True) if p.min_sz_bytes else "min",
        format_bytes(p.max_sz_bytes, exact=True),
        format_percent(min_nr),
        format_percent(max_nr),
        format_duration_us(min_age, exact=True) if min_age else "min",
        format_duration_us(max_age, exact=True),
        str(scheme.action),
    ]
    q, w = scheme.quota, scheme.wmarks
    if q != Quota() or w != Watermarks():
        fields += [
            _format_ms(q.ms) if q.ms else "0",
            format_bytes(q.sz, exact=True) if q.sz else "0",
            _format_ms(q.reset_interval_ms) if q.reset_interval_ms else "0",
            str(q.weight_sz_permil),
            str(q.weight_nr_accesses_permil),
            str(q.weight_age_permil),
            str(w.metric),
            format_duration_us(w.interval_us, exact=True) if w.interval_us else "0",
            str(w.high),
            str(w.mid),
            str(w.low),
        ]
    return " ".join(fields)


def _samples_to_percent(samples: float, max_samples: float) -> float:
    if samples >= ULONG_MAX:
        return ULONG_MAX
    return samples * 100 / max_samples if max_samples else 0


def format_schemes_text(schemes: Iterable[Scheme], attrs: Attrs | None = None) -> str:
    return "".join(format_scheme_line(s, attrs) + "\n" for s in schemes)


def _format_ms(ms: int) -> str:
    return format_duration_us(ULONG_MAX if ms >= ULONG_MAX else ms * 1000, exact=True)
