"""DAMOS schemes as plain data (the kernel's ``struct damos`` and its parts).

A :class:`Scheme` is an access pattern, an action, an apply interval, a quota, watermarks and
filters, plus the statistics and run-time state the engine keeps in it. Field names follow the
kernel (``include/linux/damon.h``); the units of a pattern's access frequency and age can be the
kernel's (samples, aggregation intervals) or damo's (percent, microseconds), resolved against the
monitoring attributes whenever the scheme is applied.

Each input part converts itself to and from damo's JSON layout (``to_dict()`` /
``from_dict(kv, path)``): plain dicts of ints, strings and ``max``; reading takes every number
form of :mod:`pydamon.units` (``4 KiB``, ``1 m 30 s``, ``50 %``) and names the path of a bad
field in its :class:`~pydamon.damos.docpath.SchemeFileError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydamon import units
from pydamon.core.operations import MAX_SCHEME_SCORE
from pydamon.damos.fields import (
    DocPath,
    age_value,
    check_keys,
    child,
    enum_parser,
    items,
    mapping,
    max_or,
    nr_accesses_value,
    plain_number,
    read_count,
    read_ms,
    read_permil,
    read_size,
    read_us,
    read_wmark,
)
from pydamon.damos.fields import field as get
from pydamon.damos.kinds import (
    ACTIONS,
    CORE_FILTER_TYPES,
    Action,
    AgeUnit,
    FilterType,
    GoalMetric,
    GoalTuner,
    NrAccessesUnit,
    WmarkMetric,
    parse_action,
    parse_wmark_metric,
)
from pydamon.damos.limits import (
    FILTER_KEYS,
    GOAL_KEYS,
    QUOTA_KEYS,
    SCHEME_KEYS,
    SCHEME_OUTPUT_KEYS,
    WMARKS_KEYS,
    SchemeError,
    check_scheme,
)
from pydamon.damos.state import QuotaState, Stats, TriedRegion
from pydamon.units import ULONG_MAX

if TYPE_CHECKING:
    from pydamon.core.attrs import Attrs


#: ``DAMOS_MAX_SCORE``: scores range 0..99 (the core's, which scores every region alike).
DAMOS_MAX_SCORE = MAX_SCHEME_SCORE


@dataclass
class AccessPattern:
    """Which regions a scheme applies to: closed ranges of size, access frequency and age.

    Defaults match every region. ``min_nr_accesses``/``max_nr_accesses`` are in
    ``nr_accesses_unit``; ``min_age``/``max_age`` in ``age_unit``; ``max`` is :data:`ULONG_MAX`.
    """

    min_sz_bytes: int = 0
    max_sz_bytes: int = ULONG_MAX
    min_nr_accesses: float = 0
    max_nr_accesses: float = ULONG_MAX
    nr_accesses_unit: NrAccessesUnit = NrAccessesUnit.SAMPLES
    min_age: float = 0
    max_age: float = ULONG_MAX
    age_unit: AgeUnit = AgeUnit.AGGR_INTERVALS

    def resolve(self, attrs: Attrs) -> tuple[int, int, int, int, int, int]:
        """The pattern in the kernel's units for ``attrs``: (min/max sz, nr_accesses, age).

        Conversions are damo's: ``samples = int(percent * max_nr_accesses / 100)``,
        ``aggr_intervals = int(usec / aggr_interval_us)``.
        """
        min_nr, max_nr = self.min_nr_accesses, self.max_nr_accesses
        if self.nr_accesses_unit == NrAccessesUnit.PERCENT:
            max_samples = attrs.aggr_interval_us / (attrs.sample_interval_us or 1)
            min_nr = _percent_to_samples(min_nr, max_samples)
            max_nr = _percent_to_samples(max_nr, max_samples)
        min_age, max_age = self.min_age, self.max_age
        if self.age_unit == AgeUnit.USEC:
            aggr = attrs.aggr_interval_us or 1
            min_age = ULONG_MAX if min_age >= ULONG_MAX else min_age / aggr
            max_age = ULONG_MAX if max_age >= ULONG_MAX else max_age / aggr
        return (
            int(self.min_sz_bytes),
            int(self.max_sz_bytes),
            int(min_nr),
            int(max_nr),
            int(min_age),
            int(max_age),
        )

    @classmethod
    def from_dict(cls, kv: Mapping[str, Any], path: DocPath) -> AccessPattern:
        """damo's ``access_pattern`` (units default to damo's: percent and usec)."""
        check_keys(kv, path, ("sz_bytes", "nr_accesses", "nr_accesses_unit", "age", "age_unit"))
        pattern = cls()
        if "sz_bytes" in kv:
            sz, at = child(kv, "sz_bytes", path)
            check_keys(sz, at, ("min", "max"))
            pattern.min_sz_bytes = get(sz, "min", at, read_size) if "min" in sz else 0
            if "max" in sz:
                pattern.max_sz_bytes = get(sz, "max", at, read_size)
        pattern.nr_accesses_unit = NrAccessesUnit(
            pattern._set_range(kv, "nr_accesses", path, NrAccessesUnit.PERCENT, nr_accesses_value)
        )
        pattern.age_unit = AgeUnit(pattern._set_range(kv, "age", path, AgeUnit.USEC, age_value))
        return pattern

    def _set_range(
        self,
        kv: Mapping[str, Any],
        name: str,
        path: DocPath,
        default_unit: NrAccessesUnit | AgeUnit,
        value_fn: Callable[[object, str | None], tuple[float, str | None]],
    ) -> str:
        """Set ``min_<name>``/``max_<name>`` from ``kv[name]``; return their unit: the one the
        values carried (min and max must agree), else ``kv[<name>_unit]``, else the default."""
        given = kv.get(f"{name}_unit")
        if given not in (None, *type(default_unit)):
            choices = " or ".join(type(default_unit))
            raise (path / f"{name}_unit").error(f"{given!r}: use {choices}")
        if name not in kv:
            return str(given or default_unit)
        bounds, at = child(kv, name, path)
        check_keys(bounds, at, ("min", "max"))
        found = set()
        for key in ("min", "max"):
            if key in bounds:
                value, unit = get(bounds, key, at, lambda v: value_fn(v, given))
                if unit is not None:
                    found.add(unit)
                setattr(self, f"{key}_{name}", value)
        if len(found) > 1:
            raise at.error("min and max must use the same unit")
        return found.pop() if found else str(given or default_unit)

    def to_dict(self) -> dict[str, Any]:
        if self.nr_accesses_unit == NrAccessesUnit.PERCENT:
            nr_fmt: Callable[[float], Any] = plain_number
        else:
            nr_fmt = lambda x: f"{int(x)} samples"  # noqa: E731
        if self.age_unit == AgeUnit.USEC:
            age_fmt: Callable[[float], Any] = int
        else:
            age_fmt = lambda x: f"{int(x)} aggr_intervals"  # noqa: E731
        return {
            "sz_bytes": {
                "min": max_or(self.min_sz_bytes, int),
                "max": max_or(self.max_sz_bytes, int),
            },
            "nr_accesses_unit": str(self.nr_accesses_unit),
            "nr_accesses": {
                "min": max_or(self.min_nr_accesses, nr_fmt),
                "max": max_or(self.max_nr_accesses, nr_fmt),
            },
            "age_unit": str(self.age_unit),
            "age": {"min": max_or(self.min_age, age_fmt), "max": max_or(self.max_age, age_fmt)},
        }


def _percent_to_samples(percent: float, max_samples: float) -> float:
    if percent >= ULONG_MAX:
        return ULONG_MAX
    return int(percent * max_samples / 100)


@dataclass
class QuotaGoal:
    """A target value of a metric the quota is auto-tuned for.

    ``current_value`` is set by the user for ``user_input`` and measured for the others.
    ``nid`` is the NUMA node of the ``node_*`` metrics, ``path`` the cgroup (v2) path of the
    ``node_memcg_*`` ones.
    """

    metric: GoalMetric = GoalMetric.USER_INPUT
    target_value: int = 0
    current_value: int = 0
    nid: int | None = None
    path: str | None = None
    #: ``some_mem_psi_us``: the PSI total at the last measurement (None: not measured yet).
    last_psi_total_us: int | None = field(default=None, compare=False)

    @classmethod
    def from_dict(cls, kv: Mapping[str, Any], path: DocPath) -> QuotaGoal:
        check_keys(kv, path, GOAL_KEYS)
        goal = cls()
        if "metric" in kv:
            goal.metric = get(kv, "metric", path, enum_parser(GoalMetric, "quota goal metric"))
        target = read_us if goal.metric == GoalMetric.SOME_MEM_PSI_US else read_count("a number")
        key = "target_value" if "target_value" in kv else "target_value_bp"
        if key not in kv:
            raise (path / "target_value").error("missing")
        goal.target_value = get(kv, key, path, target)
        for key in ("current_value", "current_value_bp"):
            if kv.get(key) is not None:
                goal.current_value = get(kv, key, path, read_count("a number"))
        if kv.get("nid") is not None:
            goal.nid = get(kv, "nid", path, read_count("a node id"))
        for key in ("path", "memcg_path"):
            if kv.get(key) is not None:
                goal.path = str(kv[key])
        return goal

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": str(self.metric),
            "nid": self.nid,
            "path": self.path,
            "target_value": self.target_value,
            "current_value": self.current_value,
        }


@dataclass
class Quota:
    """Limits on how much a scheme may do per ``reset_interval_ms`` (``struct damos_quota``).

    ``ms`` (time) and ``sz`` (bytes) of 0 mean unlimited; with goals the size quota is
    auto-tuned. Weights prioritize regions (``weight_sz_permil`` is ignored, as in the kernel).
    """

    ms: int = 0
    sz: int = 0
    reset_interval_ms: int = 0
    weight_sz_permil: int = 0
    weight_nr_accesses_permil: int = 0
    weight_age_permil: int = 0
    goals: list[QuotaGoal] = field(default_factory=list)
    goal_tuner: GoalTuner = GoalTuner.CONSIST

    @property
    def is_set(self) -> bool:
        return bool(self.ms or self.sz or self.goals)

    @classmethod
    def from_dict(cls, kv: Mapping[str, Any], path: DocPath) -> Quota:
        # effective_sz_bytes: damo's output of what the kernel computed, not an input
        check_keys(kv, path, QUOTA_KEYS, ignored=("effective_sz_bytes",))
        q = cls()
        if "time_ms" in kv:
            q.ms = get(kv, "time_ms", path, read_ms)
        if "sz_bytes" in kv:
            q.sz = get(kv, "sz_bytes", path, read_size)
        if "reset_interval_ms" in kv:
            q.reset_interval_ms = get(kv, "reset_interval_ms", path, read_ms)
        if "weights" in kv:
            w, at = child(kv, "weights", path)
            check_keys(w, at, ("sz_permil", "nr_accesses_permil", "age_permil"))
            for key, attr in (
                ("sz_permil", "weight_sz_permil"),
                ("nr_accesses_permil", "weight_nr_accesses_permil"),
                ("age_permil", "weight_age_permil"),
            ):
                if key in w:
                    setattr(q, attr, get(w, key, at, read_permil))
        if kv.get("goals") is not None:
            at = path / "goals"
            q.goals = [
                QuotaGoal.from_dict(mapping(g, at / i), at / i)
                for i, g in enumerate(items(kv["goals"], at))
            ]
        if kv.get("goal_tuner") is not None:
            q.goal_tuner = get(kv, "goal_tuner", path, enum_parser(GoalTuner, "goal tuner"))
        return q

    def to_dict(self) -> dict[str, Any]:
        return {
            "time_ms": self.ms,
            "sz_bytes": self.sz,
            "reset_interval_ms": self.reset_interval_ms,
            "goals": [g.to_dict() for g in self.goals],
            "goal_tuner": str(self.goal_tuner),
            "weights": {
                "sz_permil": self.weight_sz_permil,
                "nr_accesses_permil": self.weight_nr_accesses_permil,
                "age_permil": self.weight_age_permil,
            },
        }


@dataclass
class Watermarks:
    """Activate the scheme only while the metric is in the watermarks' range.

    Above ``high`` or below ``low`` (per mille): deactivated; back at or below ``mid``:
    activated again. Checked every ``interval_us``.
    """

    metric: WmarkMetric = WmarkMetric.NONE
    interval_us: int = 0
    high: int = 0
    mid: int = 0
    low: int = 0

    @classmethod
    def from_dict(cls, kv: Mapping[str, Any], path: DocPath) -> Watermarks:
        check_keys(kv, path, WMARKS_KEYS)
        w = cls()
        if "metric" in kv:
            w.metric = get(kv, "metric", path, parse_wmark_metric)
        if "interval_us" in kv:
            w.interval_us = get(kv, "interval_us", path, read_us)
        for key in ("high", "mid", "low"):
            for name in (f"{key}_permil", key):
                if name in kv:
                    setattr(w, key, get(kv, name, path, read_wmark))
        return w

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": str(self.metric),
            "interval_us": self.interval_us,
            "high_permil": self.high,
            "mid_permil": self.mid,
            "low_permil": self.low,
        }


@dataclass
class Filter:
    """A DAMOS filter (``struct damos_filter``).

    Memory matches if it is of ``type`` (``matching=True``) or is not (``matching=False``); the
    first filter that matches decides: ``allow`` applies the action, otherwise it is skipped.
    Arguments by type: ``memcg_path`` (memcg), ``addr_start``/``addr_end`` (addr),
    ``target_idx`` (target), ``min_sz``/``max_sz`` (hugepage_size, folio size range).
    """

    type: FilterType
    matching: bool = True
    allow: bool = False
    memcg_path: str | None = None
    addr_start: int = 0
    addr_end: int = 0
    target_idx: int = 0
    min_sz: int = 0
    max_sz: int = 0

    @property
    def handled_by_core(self) -> bool:
        return self.type in CORE_FILTER_TYPES

    @classmethod
    def from_dict(cls, kv: Mapping[str, Any], path: DocPath) -> Filter:
        check_keys(kv, path, FILTER_KEYS)
        key = "filter_type" if "filter_type" in kv else "type"
        if key not in kv:
            raise (path / "filter_type").error("missing")
        f = cls(type=get(kv, key, path, enum_parser(FilterType, "filter type")))
        if "matching" in kv:
            f.matching = get(kv, "matching", path, units.parse_bool)
        for key in ("allow", "filter_pass"):
            if key in kv:
                f.allow = get(kv, key, path, units.parse_bool)
        if f.type == FilterType.MEMCG:
            if not kv.get("memcg_path"):
                raise (path / "memcg_path").error("a memcg filter needs a memcg_path")
            f.memcg_path = str(kv["memcg_path"])
        elif f.type == FilterType.ADDR:
            if "address_range" not in kv:
                raise (path / "address_range").error("an addr filter needs an address_range")
            ar, at = child(kv, "address_range", path)
            check_keys(ar, at, ("start", "end"))
            for k in ("start", "end"):
                if k not in ar:
                    raise (at / k).error("missing")
            f.addr_start, f.addr_end = (
                get(ar, "start", at, read_size),
                get(ar, "end", at, read_size),
            )
        elif f.type == FilterType.TARGET:
            if kv.get("damon_target_idx") is None:
                raise (path / "damon_target_idx").error("a target filter needs a damon_target_idx")
            f.target_idx = get(kv, "damon_target_idx", path, read_count("a target index"))
        elif f.type == FilterType.HUGEPAGE_SIZE:
            sizes = items(kv.get("hugepage_size"), path / "hugepage_size")
            if len(sizes) != 2:
                raise (path / "hugepage_size").error("expected [min, max]")
            try:
                f.min_sz, f.max_sz = read_size(sizes[0]), read_size(sizes[1])
            except ValueError as err:
                raise (path / "hugepage_size").error(f"{sizes!r}: {err}") from None
        return f

    def to_dict(self) -> dict[str, Any]:
        t = self.type
        return {
            "filter_type": str(t),
            "matching": self.matching,
            "allow": self.allow,
            "memcg_path": self.memcg_path if t == FilterType.MEMCG else None,
            "address_range": {"start": self.addr_start, "end": self.addr_end}
            if t == FilterType.ADDR
            else None,
            "damon_target_idx": self.target_idx if t == FilterType.TARGET else None,
            "hugepage_size": [self.min_sz, self.max_sz] if t == FilterType.HUGEPAGE_SIZE else None,
        }


@dataclass(eq=False)
class Scheme:
    """A DAMOS scheme: do ``action`` on regions of ``pattern``, within quota and watermarks.

    ``apply_interval_us`` of 0 applies every aggregation interval. ``target_nid`` is the
    destination node of the migrate actions. The remaining fields are the engine's state: read
    them (``stats``, ``tried_regions``, ``quota_state.esz``), don't set them.
    """

    pattern: AccessPattern = field(default_factory=AccessPattern)
    action: Action = Action.STAT
    apply_interval_us: int = 0
    quota: Quota = field(default_factory=Quota)
    wmarks: Watermarks = field(default_factory=Watermarks)
    filters: list[Filter] = field(default_factory=list)
    target_nid: int | None = None

    stats: Stats = field(default_factory=Stats)
    quota_state: QuotaState = field(default_factory=QuotaState)
    #: Regions tried during the last complete apply interval (see :attr:`tried_bytes`).
    tried_regions: list[TriedRegion] = field(default_factory=list)
    #: Whether the watermarks currently let the scheme run.
    wmarks_activated: bool = True
    #: Next passed-sample-intervals count at which the scheme is due.
    next_apply_sis: int = 0
    #: Set per region by the engine: a core filter explicitly allowed it, so ops filters must
    #: allow it too (the kernel's ``core_filters_allowed``).
    core_filters_allowed: bool = False
    core_filters_default_reject: bool = False
    ops_filters_default_reject: bool = False
    #: Free for the operations set (e.g. cached per-scheme state).
    ops_private: Any = None

    def __post_init__(self) -> None:
        self.action = _coerce_action(self.action)
        self.validate()

    # -- views ----------------------------------------------------------------------------------
    @property
    def core_filters(self) -> list[Filter]:
        return [f for f in self.filters if f.handled_by_core]

    @property
    def ops_filters(self) -> list[Filter]:
        return [f for f in self.filters if not f.handled_by_core]

    @property
    def tried_bytes(self) -> int:
        return sum(r.size for r in self.tried_regions)

    def validate(self) -> None:
        """Raise :class:`SchemeError` for parameters the kernel rejects or that cannot mean
        anything (:func:`~pydamon.damos.limits.check_scheme`)."""
        check_scheme(self)

    @classmethod
    def from_dict(cls, kv: object, path: DocPath | None = None) -> Scheme:
        """A scheme from damo's JSON layout (a dict); errors name the path of the bad field."""
        path = path or DocPath("<schemes>")
        kv = mapping(kv, path)
        check_keys(kv, path, SCHEME_KEYS, ignored=SCHEME_OUTPUT_KEYS)
        if kv.get("dests"):
            # damo writes an empty list; weighted destinations are not modelled: refuse them
            # rather than migrate somewhere else than asked
            raise (path / "dests").error("weighted destinations are not supported; use target_nid")

        def part(key: str, part_type: Any, default: Any) -> Any:
            if kv.get(key) is None:
                return default
            sub, at = child(kv, key, path)
            return part_type.from_dict(sub, at)

        filters = []
        if kv.get("filters") is not None:
            at = path / "filters"
            for i, fkv in enumerate(items(kv["filters"], at)):
                filters.append(Filter.from_dict(mapping(fkv, at / i), at / i))
        try:
            return cls(
                pattern=part("access_pattern", AccessPattern, AccessPattern()),
                action=get(kv, "action", path, parse_action) if "action" in kv else Action.STAT,
                apply_interval_us=0
                if kv.get("apply_interval_us") is None
                else get(kv, "apply_interval_us", path, read_us),
                quota=part("quotas", Quota, Quota()),
                wmarks=part("watermarks", Watermarks, Watermarks()),
                filters=filters,
                target_nid=None
                if kv.get("target_nid") is None
                else get(kv, "target_nid", path, read_count("a node id")),
            )
        except SchemeError as err:
            at = path
            for name in (err.field or "").split("."):
                at = at / name if name else at
            raise at.error(str(err)) from None

    def to_dict(self) -> dict[str, Any]:
        """damo's JSON layout (exact values: ints, ``max``, unit-suffixed strings)."""
        kv: dict[str, Any] = {
            "action": str(self.action),
            "access_pattern": self.pattern.to_dict(),
            "apply_interval_us": self.apply_interval_us,
            "quotas": self.quota.to_dict(),
            "watermarks": self.wmarks.to_dict(),
            "filters": [f.to_dict() for f in self.filters],
        }
        if self.target_nid is not None:
            kv["target_nid"] = self.target_nid
        return kv

    def reset_state(self) -> None:
        """Forget statistics and run-time state (as a newly created kernel scheme)."""
        self.stats = Stats()
        self.quota_state = QuotaState()
        self.tried_regions = []
        self.wmarks_activated = True
        self.next_apply_sis = 0


def _coerce_action(action: object) -> Action:
    try:
        return Action(str(action))
    except ValueError:
        raise SchemeError(
            f"unknown DAMOS action {action!r}; use one of {', '.join(ACTIONS)}"
        ) from None
