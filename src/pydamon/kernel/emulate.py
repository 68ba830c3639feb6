"""What pydamon runs from user space on top of a kernel DAMON that lacks it (issue 11, point 5).

A kernel context asks for a configuration; :func:`plan` says which of its features this
kernel lacks and pydamon can run on top, :func:`native_contexts` writes the kernel what it
has, and :class:`Emulator` steps the rest after each aggregation, committing the result online:

- **intervals auto-tuning** (``intervals_goal``, native since 6.15): the sampling and
  aggregation intervals are tuned every ``aggrs`` aggregations from the snapshots' access
  events, with the core's own arithmetic (:mod:`pydamon.core.tuning`), and committed;
- **quota goals** (6.8), their metrics (PSI 6.9, node memory 6.16, memcg 6.19, LRU 7.0,
  user input 6.8) and **goal tuners** (``consist``/``temporal``, 7.1): at each quota reset
  interval pydamon measures the goals (:mod:`pydamon.damos.metrics`), tunes the effective size
  quota the kernel's way (:mod:`pydamon.damos.quota`) and commits it as the scheme's size
  quota; a time quota stays the kernel's;
- **allow filters** (6.14) where they can be said as reject filters: one allow filter as the
  reject filter of its complement (``matching`` inverted), several ``addr`` allow filters as
  reject filters of the gaps between their ranges, several ``target`` allow filters as reject
  filters of the other targets; reject filters before them are kept.

What cannot be expressed stays missing, and the context refuses it in one line
(:func:`pydamon.kernel.capabilities.require`). ``python -m pydamon.kernel.feature_table``
prints the table of docs/kernel-backend.md: per feature, native since / emulated by pydamon /
user-space engine only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from pydamon.core.attrs import Attrs, IntervalsGoal
from pydamon.core.snapshot import Snapshot
from pydamon.core.tuning import intervals_score_bp, tuned_attrs
from pydamon.damos.metrics import MetricsSource, SystemMetrics
from pydamon.damos.quota import quota_score, tune_esz_bp
from pydamon.damos.scheme import (
    ULONG_MAX,
    Filter,
    FilterType,
    GoalTuner,
    Quota,
    QuotaState,
    Scheme,
)
from pydamon.kernel.capabilities import KernelCapabilities
from pydamon.kernel.config import ContextConfig

BP = 10000


@dataclass
class Emulation:
    """Which of a configuration's features pydamon runs on top of this kernel."""

    #: intervals auto-tuning from the snapshots (the kernel has no ``intervals_goal``)
    intervals: bool = False
    #: indexes of the schemes whose quota goals pydamon tunes
    goal_schemes: tuple[int, ...] = ()
    #: scheme index -> its filters said as reject filters only (no allow filters here)
    filter_rewrites: dict[int, list[Filter]] = field(default_factory=dict)

    @property
    def any(self) -> bool:
        return self.intervals or bool(self.goal_schemes) or bool(self.filter_rewrites)

    def describe(self) -> list[str]:
        """One phrase per emulated feature (for the backend line, ``status`` and records)."""
        out = []
        if self.intervals:
            out.append("intervals auto-tuning (native since 6.15)")
        for i in self.goal_schemes:
            out.append(f"scheme {i}'s quota goals (native since 6.8-7.1)")
        for i in self.filter_rewrites:
            out.append(f"scheme {i}'s allow filters as reject filters (native since 6.14)")
        return out


def _goals_native(caps: KernelCapabilities, quota: Quota) -> bool:
    if not caps.has("quota_goals"):
        return False
    if any(str(g.metric) not in caps.goal_metrics for g in quota.goals):
        return False
    return quota.goal_tuner == GoalTuner.CONSIST or str(quota.goal_tuner) in caps.goal_tuners


def reject_only(filters: Sequence[Filter], nr_targets: int) -> list[Filter] | None:
    """``filters`` said with reject filters only, the same regions passing; None if they
    cannot be (see the module's docstring for which can)."""
    first_allow = next((i for i, f in enumerate(filters) if f.allow), None)
    if first_allow is None:
        return list(filters)
    rejects, allows = list(filters[:first_allow]), list(filters[first_allow:])
    if not all(f.allow for f in allows):
        return None  # a reject after an allow: "A or not R" has no reject-only form
    # the last filter allows, so what no filter matches is rejected: pass iff an allow matches
    if len(allows) == 1:
        return rejects + [replace(allows[0], allow=False, matching=not allows[0].matching)]
    kinds = {(f.type, f.matching) for f in allows}
    if len(kinds) != 1:
        return None  # "addr in R or target is T" has no reject-only form
    ftype, matching = kinds.pop()
    if ftype == FilterType.ADDR and matching:  # pass iff in a range: reject the gaps
        gaps, at = [], 0
        for f in sorted(allows, key=lambda f: f.addr_start):
            if f.addr_start > at:
                gaps.append((at, f.addr_start))
            at = max(at, f.addr_end)
        if at < ULONG_MAX:
            gaps.append((at, ULONG_MAX))
        return rejects + [Filter(type=FilterType.ADDR, addr_start=s, addr_end=e) for s, e in gaps]
    if ftype == FilterType.ADDR:  # pass iff outside some range: reject their intersection
        start = max(f.addr_start for f in allows)
        end = min(f.addr_end for f in allows)
        both = [Filter(type=FilterType.ADDR, addr_start=start, addr_end=end)]
        return rejects + (both if start < end else [])
    if ftype == FilterType.TARGET and matching:  # pass iff one of them: reject the others
        allowed = {f.target_idx for f in allows}
        others = [i for i in range(nr_targets) if i not in allowed]
        return rejects + [Filter(type=FilterType.TARGET, target_idx=i) for i in others]
    if ftype == FilterType.TARGET:  # pass iff not all the same target
        targets = {f.target_idx for f in allows}
        same = [Filter(type=FilterType.TARGET, target_idx=targets.pop())]
        return rejects + (same if len(targets) == 0 else [])
    return None


def plan(
    caps: KernelCapabilities, attrs: Attrs, schemes: Sequence[Scheme], nr_targets: int
) -> Emulation:
    """What of (``attrs``, ``schemes``) pydamon runs on top of ``caps``'s kernel."""
    out = Emulation(intervals=attrs.intervals_goal.enabled and not caps.has("intervals_goal"))
    goal_schemes = []
    for i, scheme in enumerate(schemes):
        quota = scheme.quota
        if (quota.goals or quota.goal_tuner != GoalTuner.CONSIST) and not _goals_native(
            caps, quota
        ):
            goal_schemes.append(i)
        # the filter directories themselves (6.3) cannot be emulated: refused as missing
        if caps.filter_dirs and not caps.allow_filters and any(f.allow for f in scheme.filters):
            rewritten = reject_only(scheme.filters, nr_targets)
            if rewritten is not None:
                out.filter_rewrites[i] = rewritten
    out.goal_schemes = tuple(goal_schemes)
    return out


def native_contexts(
    emulation: Emulation, contexts: Sequence[ContextConfig], quota_sizes: dict[int, int]
) -> list[ContextConfig]:
    """``contexts`` as the kernel gets them: the emulated features taken out, the emulated
    quotas' sizes (``quota_sizes``: scheme index -> bytes) in their place."""
    out = []
    for ctx in contexts:
        attrs = ctx.attrs
        if emulation.intervals:
            attrs = replace(attrs, intervals_goal=IntervalsGoal())
        schemes = []
        for i, scheme in enumerate(ctx.schemes):
            if i in emulation.goal_schemes:
                quota = replace(
                    scheme.quota,
                    goals=[],
                    goal_tuner=GoalTuner.CONSIST,
                    sz=quota_sizes.get(i, scheme.quota.sz),
                )
                scheme = replace(scheme, quota=quota)
            if i in emulation.filter_rewrites:
                scheme = replace(scheme, filters=emulation.filter_rewrites[i])
            schemes.append(scheme)
        out.append(replace(ctx, attrs=attrs, schemes=schemes))
    return out


class Emulator:
    """Steps the emulated features of one kernel context after each of its aggregations."""

    def __init__(
        self,
        emulation: Emulation,
        schemes: Sequence[Scheme],
        metrics: MetricsSource | None = None,
    ) -> None:
        self.emulation = emulation
        self.schemes = list(schemes)
        self.metrics = metrics or SystemMetrics()
        self._aggregations = 0
        self._states = {i: QuotaState() for i in emulation.goal_schemes}
        self._next_reset_s: dict[int, float] = {}
        #: scheme index -> the size quota (bytes) pydamon committed last
        self.quota_sizes: dict[int, int] = {}
        #: the intervals score (bp) of the last tuning step, for status and tests
        self.last_intervals_score_bp: int | None = None

    def start(self, now_s: float | None = None) -> None:
        """The quotas' first sizes, before the kdamond starts (as the kernel's first window)."""
        now_s = time.monotonic() if now_s is None else now_s
        for i in self.emulation.goal_schemes:
            self._tune_quota(i, now_s)

    def after_aggregation(
        self, attrs: Attrs, snapshots: Sequence[Snapshot], now_s: float | None = None
    ) -> tuple[Attrs | None, bool]:
        """(the tuned attrs or None, whether a quota size changed): what to commit."""
        now_s = time.monotonic() if now_s is None else now_s
        self._aggregations += 1
        new_attrs = None
        goal = attrs.intervals_goal
        if self.emulation.intervals and goal.enabled and self._aggregations >= goal.aggrs:
            self._aggregations = 0
            regions = [(s.sizes, s.nr_accesses) for s in snapshots]
            self.last_intervals_score_bp = intervals_score_bp(attrs, regions)
            new_attrs = tuned_attrs(attrs, regions)
        changed = False
        for i in self.emulation.goal_schemes:
            if now_s >= self._next_reset_s.get(i, 0.0):
                changed |= self._tune_quota(i, now_s)
        return new_attrs, changed

    def _tune_quota(self, i: int, now_s: float) -> bool:
        quota = self.schemes[i].quota
        state = self._states[i]
        # the kernel tunes at each charge window reset; a zero interval resets every apply
        self._next_reset_s[i] = now_s + quota.reset_interval_ms / 1000
        esz = ULONG_MAX
        if quota.goals:
            tune_esz_bp(quota, state, quota_score(quota.goals, self.metrics))
            esz = ULONG_MAX if state.esz_bp >= ULONG_MAX else state.esz_bp // BP
        if quota.sz and quota.sz < esz:
            esz = quota.sz
        # size 0 means "no quota" to the kernel; 1 byte is less than a region: nothing applies
        size = 0 if esz >= ULONG_MAX else max(esz, 1)
        changed = self.quota_sizes.get(i) != size
        self.quota_sizes[i] = size
        return changed


def emulated_here(caps: KernelCapabilities) -> list[str]:
    """What pydamon would run on top of this kernel, were a configuration to ask for it."""
    from pydamon.damos.scheme import GoalMetric

    out = []
    if not caps.has("intervals_goal"):
        out.append("intervals auto-tuning")
    if not caps.has("quota_goals"):
        out.append("quota goals (all metrics)")
    else:
        metrics = [str(m) for m in GoalMetric if str(m) not in caps.goal_metrics]
        if metrics:
            out.append(f"quota goal metrics {', '.join(metrics)}")
    tuners = [str(t) for t in GoalTuner if str(t) not in caps.goal_tuners]
    if tuners:
        out.append(f"quota goal tuners {', '.join(tuners)}")
    if caps.filter_dirs and not caps.allow_filters:
        out.append("allow filters (as reject filters, where expressible)")
    return out
