"""The DAMOS engine: applies schemes to the monitored regions (``kdamond_apply_schemes()``).

:class:`SchemesEngine` implements the core's :class:`~pydamon.core.context.SchemesRunner`; the
core calls it at ``kdamond_fn``'s points: ``init`` at loop start, ``wmark_wait_us`` before each
sampling, ``apply`` after each sampling, ``attrs_changed`` when the intervals change. It asks the
operations set to apply actions (``apply_scheme``) and to score regions (``get_scheme_score``).

Per due scheme: activation (watermarks), quota window handling, effective quota and the minimum
priority score; then for every target, region and due scheme: skip if the quota is full or the
region was charged in the last window, match the access pattern (``nr_accesses_bp // 10000``, age,
size) and the minimum score, split the region so only the remaining quota is applied, evaluate the
core filters (``addr`` splits regions at its bounds), apply, charge time and size, reset the age
(unless ``stat``), count statistics, and record the region as tried.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from pydamon.core.attrs import BP
from pydamon.core.clock import RealClock
from pydamon.core.regions import FIELDS, Regions, align_down
from pydamon.damos.filters import set_filters_default_reject
from pydamon.damos.metrics import MetricsSource, SystemMetrics
from pydamon.damos.quota import (
    min_score_for,
    new_histogram,
    quota_is_full,
    quota_is_set,
    quota_score,
    set_effective_quota,
)
from pydamon.damos.scheme import (
    Action,
    Filter,
    FilterType,
    Scheme,
    SchemeError,
    TriedRegion,
    WmarkMetric,
)
from pydamon.damos.wmarks import wmark_wait_us

if TYPE_CHECKING:
    from pydamon.core.context import Context, Target

#: Walk callback: ``fn(ctx, target_index, region, scheme, sz_filter_passed)``; ``region`` is a
#: :class:`TriedRegion` (a copy).
WalkFn = Callable[["Context", int, TriedRegion, Scheme, int], None]


class SchemesEngine:
    """Runs the DAMOS schemes of one :class:`~pydamon.core.context.Context`.

    ``metrics`` is where watermarks and quota goals read the system's state; by default the
    operations set's (``ops.metrics``, e.g. the simulated machine's) if it has one, else the
    running system's (:class:`~pydamon.damos.metrics.SystemMetrics`).
    """

    def __init__(self, metrics: MetricsSource | None = None) -> None:
        self.metrics = metrics
        self._wmark_reads: dict[int, tuple[int, int | None]] = {}
        self._tried: dict[int, list[TriedRegion]] = {}
        self._walk_fns: list[WalkFn] = []
        self._patterns: dict[int, tuple[int, int, int, int, int, int]] = {}

    # -- SchemesRunner --------------------------------------------------------------------------
    def init(self, ctx: Context) -> None:
        """``kdamond_init_ctx()``'s part for schemes."""
        if self.metrics is None:
            self.metrics = _ops_metrics(ctx) or SystemMetrics()
        supported = frozenset(getattr(ctx.ops, "supported_ops_filters", ()))
        for s in ctx.schemes:
            _check_scheme(s)
            unsupported = sorted({str(f.type) for f in s.ops_filters} - supported)
            if unsupported:
                # applying the action while ignoring a filter would touch memory the user
                # excluded: refuse instead
                raise SchemeError(
                    f"the {ctx.ops.name} operations set cannot evaluate "
                    f"{', '.join(unsupported)} filters; remove them or use an operations set "
                    f"that supports them (see docs/damos.md)"
                )
            set_next_apply_sis(s, ctx)
            set_filters_default_reject(s)

    def attrs_changed(self, ctx: Context) -> None:
        for s in ctx.schemes:
            set_next_apply_sis(s, ctx)

    def wmark_wait_us(self, ctx: Context) -> int:
        """``kdamond_wait_activation()``'s check: 0 if any scheme is active, else the shortest
        wait among the schemes' watermark intervals."""
        min_wait: int | None = None
        now = ctx.clock.now_us()
        for s in ctx.schemes:
            wait = wmark_wait_us(s, self._wmark_metric(s, now))
            if min_wait is None or wait < min_wait:
                min_wait = wait
        return min_wait or 0

    def apply(self, ctx: Context) -> None:
        """``kdamond_apply_schemes()``."""
        due = [
            s
            for s in ctx.schemes
            if ctx.passed_sample_intervals >= s.next_apply_sis and s.wmarks_activated
        ]
        if not due:
            return
        # the pattern in the kernel's units for the current intervals, once per apply
        self._patterns = {id(s): s.pattern.resolve(ctx.attrs) for s in due}
        for s in due:
            self._adjust_quota(ctx, s)
        max_region_sz = _region_sz_limit(ctx)
        for ti, t in enumerate(ctx.targets):
            if not t.valid:
                for s in ctx.schemes:
                    if s.quota_state.charge_target_from == ti:
                        s.quota_state.charge_target_from = None
                        s.quota_state.charge_addr_from = 0
                continue
            self._apply_target(ctx, ti, t, max_region_sz)
        for s in ctx.schemes:
            if ctx.passed_sample_intervals < s.next_apply_sis:
                continue
            # one apply interval of this scheme is complete: publish what it was tried on
            s.tried_regions = self._tried.pop(id(s), [])
            set_next_apply_sis(s, ctx)

    # -- extras ---------------------------------------------------------------------------------
    def add_walk_callback(self, fn: WalkFn) -> None:
        """Call ``fn`` for every region an action is applied to (``damos_walk()``, persistent)."""
        self._walk_fns.append(fn)

    def remove_walk_callback(self, fn: WalkFn) -> None:
        self._walk_fns.remove(fn)

    # -- watermarks -----------------------------------------------------------------------------
    def _wmark_metric(self, s: Scheme, now_us: int) -> int | None:
        if s.wmarks.metric != WmarkMetric.FREE_MEM_RATE:
            return None
        # The kernel reads a counter every sampling; reading /proc/meminfo that often would cost
        # more than the monitoring itself, so a value is reused for one watermarks interval.
        cached = self._wmark_reads.get(id(s))
        if cached is not None and now_us - cached[0] < s.wmarks.interval_us:
            return cached[1]
        assert self.metrics is not None
        value = self.metrics.free_mem_rate_permil()
        self._wmark_reads[id(s)] = (now_us, value)
        return value

    # -- quotas ---------------------------------------------------------------------------------
    def _adjust_quota(self, ctx: Context, s: Scheme) -> None:
        """``damos_adjust_quota()``."""
        quota, state = s.quota, s.quota_state
        if not quota.ms and not quota.sz and not quota.goals:
            return
        now = ctx.clock.now_us()
        metrics = self.metrics or SystemMetrics()

        def goal_score() -> int:
            return quota_score(quota.goals, metrics)

        if not state.total_charged_sz and state.charged_from_us is None:
            # first charge window
            state.charged_from_us = now
            set_effective_quota(quota, state, goal_score, ctx.min_region_sz)
        assert state.charged_from_us is not None
        window_us = quota.reset_interval_ms * 1000
        if not (state.charged_from_us <= now < state.charged_from_us + window_us):
            # a new charge window starts
            if quota_is_full(quota, state, ctx.min_region_sz):
                s.stats.qt_exceeds += 1
            state.total_charged_sz += state.charged_sz
            state.charged_from_us = now
            state.charged_sz = 0
            set_effective_quota(quota, state, goal_score, ctx.min_region_sz)

        # prioritization: the size-per-score histogram of the regions the scheme could act on
        histogram = new_histogram()
        max_score = 0
        for ti, t in enumerate(ctx.targets):
            i = 0
            while i < len(t.regions):
                if self._pattern_match(ctx, t.regions, i, s) and not self._core_filter_out(
                    ctx, ti, t, i, s
                ):
                    score = ctx.ops.get_scheme_score(ctx, t, i, s)
                    histogram[score] += int(t.regions.end[i] - t.regions.start[i])
                    max_score = max(max_score, score)
                i += 1
        state.min_score = min_score_for(histogram, max_score, state.esz)

    # -- applying -------------------------------------------------------------------------------
    def _apply_target(self, ctx: Context, ti: int, t: Target, max_region_sz: int) -> None:
        """``damos_apply_target()``: apply every due scheme to each region, then merge back
        quota splits that lost no information."""
        regions = t.regions
        i = 0
        while i < len(regions):
            self._do_apply_schemes(ctx, ti, t, i)
            if (
                i > 0
                and regions.end[i - 1] == regions.start[i]
                and regions.age[i - 1] == regions.age[i]
                and regions.last_nr_accesses[i - 1] == regions.last_nr_accesses[i]
                and regions.nr_accesses[i - 1] == regions.nr_accesses[i]
                and regions.end[i] - regions.start[i - 1] <= max_region_sz
            ):
                regions.end[i - 1] = regions.end[i]
                _delete_region(regions, i)
                continue
            i += 1

    def _do_apply_schemes(self, ctx: Context, ti: int, t: Target, i: int) -> None:
        """``damon_do_apply_schemes()`` for region ``i`` of target ``t``."""
        for s in ctx.schemes:
            if ctx.passed_sample_intervals < s.next_apply_sis:
                continue
            if not s.wmarks_activated:
                continue
            if quota_is_full(s.quota, s.quota_state, ctx.min_region_sz):
                continue
            if self._skip_charged_region(ctx, ti, t, i, s):
                continue
            if self._valid_target(ctx, t, i, s):
                self._apply_scheme(ctx, ti, t, i, s)

    def _skip_charged_region(self, ctx: Context, ti: int, t: Target, i: int, s: Scheme) -> bool:
        """``damos_skip_charged_region()``: skip what the last window already charged; split a
        region the resume point falls into."""
        state = s.quota_state
        regions = t.regions
        skip = False
        if state.charge_target_from is not None:
            if ti != state.charge_target_from:
                return True
            addr_from = state.charge_addr_from
            start, end = int(regions.start[i]), int(regions.end[i])
            if addr_from and end <= addr_from:
                skip = True
            elif addr_from and start < addr_from:
                sz_to_skip = align_down(addr_from - start, ctx.min_region_sz)
                if not sz_to_skip:
                    if end - start <= ctx.min_region_sz:
                        skip = True
                    else:
                        sz_to_skip = ctx.min_region_sz
                if not skip:
                    regions.split_at(i, sz_to_skip)
                    skip = True
        if i == len(regions) - 1:
            state.charge_target_from = None
            state.charge_addr_from = 0
        return skip

    def _valid_target(self, ctx: Context, t: Target, i: int, s: Scheme) -> bool:
        """``damos_valid_target()``: pattern, and the minimum score under a quota."""
        if not self._pattern_match(ctx, t.regions, i, s):
            return False
        if not quota_is_set(s.quota, s.quota_state):
            return True
        return ctx.ops.get_scheme_score(ctx, t, i, s) >= s.quota_state.min_score

    def _pattern_match(self, ctx: Context, regions: Regions, i: int, s: Scheme) -> bool:
        """``__damos_valid_target()``: size, moving-sum access frequency and age in range."""
        resolved = self._patterns.get(id(s))
        if resolved is None:
            resolved = s.pattern.resolve(ctx.attrs)
        min_sz, max_sz, min_nr, max_nr, min_age, max_age = resolved
        sz = int(regions.end[i] - regions.start[i])
        nr_accesses = int(regions.nr_accesses_bp[i]) // BP
        age = int(regions.age[i])
        return (
            min_sz <= sz <= max_sz and min_nr <= nr_accesses <= max_nr and min_age <= age <= max_age
        )

    def _core_filter_out(self, ctx: Context, ti: int, t: Target, i: int, s: Scheme) -> bool:
        """``damos_core_filter_out()``: first matching core filter decides."""
        s.core_filters_allowed = False
        for f in s.filters:
            if not f.handled_by_core:
                continue
            if _core_filter_match(ctx, ti, t, i, f):
                if f.allow:
                    s.core_filters_allowed = True
                return not f.allow
        return s.core_filters_default_reject

    def _apply_scheme(self, ctx: Context, ti: int, t: Target, i: int, s: Scheme) -> None:
        """``damos_apply_scheme()``."""
        quota, state = s.quota, s.quota_state
        regions = t.regions
        sz = int(regions.end[i] - regions.start[i])
        sz_applied = 0
        sz_ops_filter_passed = 0
        if quota_is_set(quota, state) and state.charged_sz + sz > state.esz:
            sz = align_down(state.esz - state.charged_sz, ctx.min_region_sz)
            if not sz:
                _update_stat(s, sz, sz_applied, sz_ops_filter_passed)
                return
            regions.split_at(i, sz)
        if self._core_filter_out(ctx, ti, t, i, s):
            return
        # An addr filter may have split the region: charge and count what is tried. (The kernel
        # keeps the size from before that split, counting the rest twice.)
        sz = int(regions.end[i] - regions.start[i])
        timer = _timer(ctx)
        begin = timer()
        start, end = int(regions.start[i]), int(regions.end[i])
        result = ctx.ops.apply_scheme(ctx, t, start, end, s)
        sz_applied = int(result.sz_applied)
        sz_ops_filter_passed = int(result.sz_ops_filter_passed)
        tried = TriedRegion(
            target_index=ti,
            start=start,
            end=end,
            nr_accesses=int(regions.nr_accesses_bp[i]) // BP,
            age=int(regions.age[i]),
            sz_filter_passed=sz_ops_filter_passed,
        )
        self._tried.setdefault(id(s), []).append(tried)
        for fn in self._walk_fns:
            fn(ctx, ti, tried, s, sz_ops_filter_passed)
        state.total_charged_ns += max(timer() - begin, 0)
        # sz_applied can exceed the region (e.g. whole folios); charge only the region then
        state.charged_sz += sz
        if quota_is_full(quota, state, ctx.min_region_sz):
            state.charge_target_from = ti
            state.charge_addr_from = end
        if s.action != Action.STAT:
            regions.age[i] = 0
        _update_stat(s, sz, sz_applied, sz_ops_filter_passed)


# -- helpers -----------------------------------------------------------------------------------


def set_next_apply_sis(s: Scheme, ctx: Context) -> None:
    """``damos_set_next_apply_sis()``."""
    sample = ctx.attrs.sample_interval_us or 1
    apply_interval = s.apply_interval_us or ctx.attrs.aggr_interval_us
    s.next_apply_sis = ctx.passed_sample_intervals + apply_interval // sample


def _check_scheme(s: object) -> None:
    if not isinstance(s, Scheme):
        raise TypeError(
            f"schemes must be pydamon.damos.Scheme objects, not {type(s).__name__}; "
            "parse scheme text with pydamon.damos.parse_schemes()"
        )


def _ops_metrics(ctx: Context) -> MetricsSource | None:
    """The operations set's own metrics (``ops.metrics``, e.g. the simulated machine's)."""
    source = getattr(ctx.ops, "metrics", None)
    if callable(source) and not isinstance(source, MetricsSource):
        source = source()
    return source if isinstance(source, MetricsSource) else None


def _core_filter_match(ctx: Context, ti: int, t: Target, i: int, f: Filter) -> bool:
    """``damos_filter_match()`` for core filters; an ``addr`` filter splits a region that
    crosses its bounds so each piece is wholly in or out."""
    if f.type == FilterType.TARGET:
        matched = ti == f.target_idx
    elif f.type == FilterType.ADDR:
        regions = t.regions
        start = align_down(f.addr_start, ctx.min_region_sz)
        end = align_down(f.addr_end, ctx.min_region_sz)
        r_start, r_end = int(regions.start[i]), int(regions.end[i])
        if start <= r_start and r_end <= end:
            matched = True
        elif r_end <= start or end <= r_start:
            matched = False
        elif r_start < start:
            regions.split_at(i, start - r_start)
            matched = False
        else:
            regions.split_at(i, end - r_start)
            matched = True
    else:
        return False
    return matched == f.matching


def _update_stat(s: Scheme, sz_tried: int, sz_applied: int, sz_ops_filter_passed: int) -> None:
    st = s.stats
    st.nr_tried += 1
    st.sz_tried += sz_tried
    if sz_applied:
        st.nr_applied += 1
    st.sz_applied += sz_applied
    st.sz_ops_filter_passed += sz_ops_filter_passed


def _region_sz_limit(ctx: Context) -> int:
    """``damon_region_sz_limit()``."""
    sz = sum(t.regions.total_size for t in ctx.targets)
    if ctx.attrs.min_nr_regions:
        sz //= ctx.attrs.min_nr_regions
    return max(sz, ctx.min_region_sz)


def _delete_region(regions: Regions, i: int) -> None:
    for name in FIELDS:
        setattr(regions, name, np.delete(getattr(regions, name), i))


def _timer(ctx: Context) -> Callable[[], int]:
    """Nanoseconds for time-quota charging: real time with a real clock; in simulation the
    virtual time the operations set's model spent applying (deterministic)."""
    if isinstance(ctx.clock, RealClock):
        return time.perf_counter_ns
    clock = ctx.clock
    return lambda: clock.now_us() * 1000
