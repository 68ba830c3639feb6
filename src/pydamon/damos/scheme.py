"""DAMOS schemes as plain data (the kernel's ``struct damos`` and its parts).

A :class:`Scheme` is an access pattern, an action, an apply interval, a quota, watermarks and
filters, plus the statistics and run-time state the engine keeps in it. Field names follow the
kernel (``include/linux/damon.h``); the units of a pattern's access frequency and age can be the
kernel's (samples, aggregation intervals) or damo's (percent, microseconds), resolved against the
monitoring attributes whenever the scheme is applied.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydamon.core.operations import MAX_SCHEME_SCORE

if TYPE_CHECKING:
    from pydamon.core.attrs import Attrs

#: The kernel's ``ULONG_MAX``: what ``max`` means for sizes, counts and times.
ULONG_MAX = 2**64 - 1
#: ``DAMOS_MAX_SCORE``: scores range 0..99 (the core's, which scores every region alike).
DAMOS_MAX_SCORE = MAX_SCHEME_SCORE


class SchemeError(ValueError):
    """A scheme whose parameters the kernel would reject (one-line message)."""


class Action(enum.StrEnum):
    """DAMOS actions, named (and ordered) as the kernel's ``enum damos_action``."""

    WILLNEED = "willneed"
    COLD = "cold"
    PAGEOUT = "pageout"
    HUGEPAGE = "hugepage"
    NOHUGEPAGE = "nohugepage"
    LRU_PRIO = "lru_prio"
    LRU_DEPRIO = "lru_deprio"
    MIGRATE_HOT = "migrate_hot"
    MIGRATE_COLD = "migrate_cold"
    STAT = "stat"
    COLLAPSE = "collapse"


ACTIONS = tuple(a.value for a in Action)


class NrAccessesUnit(enum.StrEnum):
    SAMPLES = "samples"  # the kernel's unit: sampling intervals with an access per aggregation
    PERCENT = "percent"  # damo's unit: percent of the samples of an aggregation interval


class AgeUnit(enum.StrEnum):
    AGGR_INTERVALS = "aggr_intervals"  # the kernel's unit
    USEC = "usec"  # damo's unit


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


def _percent_to_samples(percent: float, max_samples: float) -> float:
    if percent >= ULONG_MAX:
        return ULONG_MAX
    return int(percent * max_samples / 100)


class GoalMetric(enum.StrEnum):
    """Quota goal metrics (``enum damos_quota_goal_metric``)."""

    USER_INPUT = "user_input"
    SOME_MEM_PSI_US = "some_mem_psi_us"
    NODE_MEM_USED_BP = "node_mem_used_bp"
    NODE_MEM_FREE_BP = "node_mem_free_bp"
    NODE_MEMCG_USED_BP = "node_memcg_used_bp"
    NODE_MEMCG_FREE_BP = "node_memcg_free_bp"
    ACTIVE_MEM_BP = "active_mem_bp"
    INACTIVE_MEM_BP = "inactive_mem_bp"


class GoalTuner(enum.StrEnum):
    """How quota goals tune the effective quota (``damos_quota_goal_tuner``, v7.1)."""

    CONSIST = "consist"  # proportional feedback loop (the default)
    TEMPORAL = "temporal"  # full quota until the goal is met, then none


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


@dataclass
class QuotaState:
    """The kernel's quota bookkeeping fields that users do not set."""

    #: Effective size quota of the current charge window (bytes).
    esz: int = 0
    #: The feedback loop's input (esz in bp) when goals are set.
    esz_bp: int = 0
    charged_sz: int = 0
    #: Start of the current charge window (monitor clock, µs); None before the first window.
    charged_from_us: int | None = None
    total_charged_sz: int = 0
    total_charged_ns: int = 0
    #: Where the last window stopped: (target index, address) to resume from, or None.
    charge_target_from: int | None = None
    charge_addr_from: int = 0
    #: Lowest priority score a region needs to be applied in this window.
    min_score: int = 0


class WmarkMetric(enum.StrEnum):
    NONE = "none"
    FREE_MEM_RATE = "free_mem_rate"  # free memory per mille of total


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


class FilterType(enum.StrEnum):
    ANON = "anon"
    ACTIVE = "active"
    MEMCG = "memcg"
    YOUNG = "young"
    HUGEPAGE_SIZE = "hugepage_size"
    UNMAPPED = "unmapped"
    ADDR = "addr"
    TARGET = "target"


#: Filters the core handles (on regions); all others are evaluated per page by the ops set.
CORE_FILTER_TYPES = frozenset({FilterType.ADDR, FilterType.TARGET})


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


@dataclass
class Stats:
    """Per-scheme statistics (``struct damos_stat``)."""

    nr_tried: int = 0
    sz_tried: int = 0
    nr_applied: int = 0
    sz_applied: int = 0
    sz_ops_filter_passed: int = 0
    qt_exceeds: int = 0


@dataclass(frozen=True)
class TriedRegion:
    """A region a scheme was tried on (``schemes/<N>/tried_regions/<R>``)."""

    target_index: int
    start: int
    end: int
    nr_accesses: int
    age: int
    sz_filter_passed: int

    @property
    def size(self) -> int:
        return self.end - self.start


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
        """Raise :class:`SchemeError` for parameters the kernel rejects."""
        p = self.pattern
        if p.min_sz_bytes > p.max_sz_bytes:
            raise SchemeError(
                f"access pattern size range is empty (min {p.min_sz_bytes} > max {p.max_sz_bytes})"
            )
        if p.min_nr_accesses > p.max_nr_accesses:
            raise SchemeError(
                f"access pattern nr_accesses range is empty "
                f"(min {p.min_nr_accesses} > max {p.max_nr_accesses})"
            )
        if p.min_age > p.max_age:
            raise SchemeError(
                f"access pattern age range is empty (min {p.min_age} > max {p.max_age})"
            )
        for value, name in (
            (p.min_sz_bytes, "min size"),
            (p.min_nr_accesses, "min nr_accesses"),
            (p.min_age, "min age"),
            (self.apply_interval_us, "apply interval"),
            (self.quota.ms, "time quota"),
            (self.quota.sz, "size quota"),
            (self.quota.reset_interval_ms, "quota reset interval"),
        ):
            if value < 0:
                raise SchemeError(f"{name} must not be negative (got {value})")
        for goal in self.quota.goals:
            if goal.target_value <= 0:
                raise SchemeError(
                    f"quota goal {goal.metric} needs a positive target value "
                    f"(got {goal.target_value})"
                )
        w = self.wmarks
        if w.metric != WmarkMetric.NONE and not (w.high >= w.mid >= w.low):
            raise SchemeError(
                f"watermarks must satisfy high >= mid >= low (got {w.high}, {w.mid}, {w.low})"
            )
        for f in self.filters:
            if f.type == FilterType.ADDR and f.addr_end < f.addr_start:
                raise SchemeError(
                    f"addr filter range is inverted ({f.addr_start:#x} > {f.addr_end:#x})"
                )
            if f.type == FilterType.HUGEPAGE_SIZE and f.max_sz < f.min_sz:
                raise SchemeError(
                    f"hugepage_size filter range is inverted ({f.min_sz} > {f.max_sz})"
                )
            if f.type == FilterType.MEMCG and not f.memcg_path:
                raise SchemeError("memcg filter needs a memcg_path (a cgroup v2 path)")

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
