"""What a scheme may say: the keys of damo's scheme layout and the range of every value.

Reading is strict so that a typo can never widen what a scheme touches: a misspelt key would
leave its field at the default, and the defaults match every region.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydamon.damos.fields import MAX_WMARK_PERMIL, plain_number
from pydamon.damos.kinds import FilterType, NrAccessesUnit, WmarkMetric
from pydamon.units import ULONG_MAX

if TYPE_CHECKING:
    from pydamon.damos.scheme import Scheme


class SchemeError(ValueError):
    """A scheme whose parameters the kernel would reject (one-line message).

    ``field`` is where in damo's JSON layout of the scheme the bad value is
    (``watermarks.interval_us``), so that a scheme file's error can name it.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


# The keys of damo's JSON layout (``_damon.py`` ``to_kvpairs``; old names too). Any other key is
# an error: ignored, a misspelt one would leave its field at the default, which matches all.
SCHEME_KEYS = (
    "action",
    "access_pattern",
    "apply_interval_us",
    "quotas",
    "watermarks",
    "filters",
    "target_nid",
    "dests",
)
#: What damo writes of a running scheme (results, not inputs): accepted and ignored.
SCHEME_OUTPUT_KEYS = ("stats", "tried_regions", "tried_bytes")
QUOTA_KEYS = ("time_ms", "sz_bytes", "reset_interval_ms", "weights", "goals", "goal_tuner")
GOAL_KEYS = (
    "metric",
    "target_value",
    "target_value_bp",
    "current_value",
    "current_value_bp",
    "nid",
    "path",
    "memcg_path",
)
WMARKS_KEYS = (
    "metric",
    "interval_us",
    "high_permil",
    "mid_permil",
    "low_permil",
    "high",
    "mid",
    "low",
)
FILTER_KEYS = (
    "filter_type",
    "type",
    "matching",
    "allow",
    "filter_pass",
    "memcg_path",
    "address_range",
    "damon_target_idx",
    "hugepage_size",
)


def check_scheme(scheme: Scheme) -> None:
    """Raise :class:`SchemeError` for parameters the kernel rejects or that cannot mean
    anything (a percentage above 100, a watermark above 1000 per mille, a watermark check
    interval of 0); its ``field`` names the bad field in damo's JSON layout."""
    p = scheme.pattern
    for key, name, low, high in (
        ("sz_bytes", "size", p.min_sz_bytes, p.max_sz_bytes),
        ("nr_accesses", "nr_accesses", p.min_nr_accesses, p.max_nr_accesses),
        ("age", "age", p.min_age, p.max_age),
    ):
        if low < 0:
            raise SchemeError(
                f"min {name} must not be negative (got {low})", f"access_pattern.{key}.min"
            )
        if low > high:
            raise SchemeError(
                f"access pattern {name} range is empty (min {plain_number(low)} > max "
                f"{plain_number(high)})",
                f"access_pattern.{key}",
            )
    if p.nr_accesses_unit == NrAccessesUnit.PERCENT:
        for key, value in (("min", p.min_nr_accesses), ("max", p.max_nr_accesses)):
            if 100 < value < ULONG_MAX:
                raise SchemeError(
                    f"{plain_number(value)} is out of range (a percentage is 0 to 100, or "
                    "min, max)",
                    f"access_pattern.nr_accesses.{key}",
                )
    q = scheme.quota
    for value, name, key in (
        (scheme.apply_interval_us, "apply interval", "apply_interval_us"),
        (q.ms, "time quota", "quotas.time_ms"),
        (q.sz, "size quota", "quotas.sz_bytes"),
        (q.reset_interval_ms, "quota reset interval", "quotas.reset_interval_ms"),
        (q.weight_sz_permil, "size weight", "quotas.weights.sz_permil"),
        (
            q.weight_nr_accesses_permil,
            "nr_accesses weight",
            "quotas.weights.nr_accesses_permil",
        ),
        (q.weight_age_permil, "age weight", "quotas.weights.age_permil"),
    ):
        if not 0 <= value <= ULONG_MAX:  # also refuses NaN
            raise SchemeError(f"{name} must be 0 to max (got {value})", key)
    for i, goal in enumerate(q.goals):
        if goal.target_value <= 0:
            raise SchemeError(
                f"quota goal {goal.metric} needs a positive target value (got {goal.target_value})",
                f"quotas.goals.{i}.target_value",
            )
    w = scheme.wmarks
    for key in ("high", "mid", "low"):
        value = getattr(w, key)
        if not 0 <= value <= MAX_WMARK_PERMIL:
            raise SchemeError(
                f"{value} is out of range (a watermark is 0 to {MAX_WMARK_PERMIL} per mille)",
                f"watermarks.{key}_permil",
            )
    if w.metric != WmarkMetric.NONE:
        if not w.high >= w.mid >= w.low:
            raise SchemeError(
                f"watermarks must satisfy high >= mid >= low (got {w.high}, {w.mid}, {w.low})",
                "watermarks",
            )
        if w.interval_us <= 0:
            raise SchemeError(
                f"watermarks with metric {w.metric} need a check interval above 0 "
                f"(got {w.interval_us} us)",
                "watermarks.interval_us",
            )
    for i, f in enumerate(scheme.filters):
        at = f"filters.{i}"
        if f.type == FilterType.ADDR and f.addr_end < f.addr_start:
            raise SchemeError(
                f"addr filter range is inverted ({f.addr_start:#x} > {f.addr_end:#x})",
                f"{at}.address_range",
            )
        if f.type == FilterType.HUGEPAGE_SIZE and f.max_sz < f.min_sz:
            raise SchemeError(
                f"hugepage_size filter range is inverted ({f.min_sz} > {f.max_sz})",
                f"{at}.hugepage_size",
            )
        if f.type == FilterType.MEMCG and not f.memcg_path:
            raise SchemeError("memcg filter needs a memcg_path (a cgroup v2 path)", at)
