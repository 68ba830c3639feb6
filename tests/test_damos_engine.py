"""The DAMOS engine against the kernel's semantics, with a small stand-in operations set.

Most tests set regions' monitoring results by hand and call the engine's ``apply`` directly, so
every decision (pattern, quota, score, filter) is checked exactly; a few run the whole loop.
"""

from __future__ import annotations

import numpy as np
import pytest

from pydamon.core import Attrs, Context, Target, VirtualClock
from pydamon.core.feedback import feed_loop_next_input
from pydamon.core.operations import ApplyResult, Operations, update_regions_access
from pydamon.damos import (
    AccessPattern,
    Action,
    AgeUnit,
    Filter,
    FilterType,
    GoalMetric,
    GoalTuner,
    ManualMetrics,
    NrAccessesUnit,
    Quota,
    QuotaGoal,
    Scheme,
    SchemeError,
    SchemesEngine,
    Watermarks,
    WmarkMetric,
)
from pydamon.damos.quota import min_score_for, set_effective_quota
from pydamon.damos.scheme import QuotaState
from pydamon.damos.score import cold_score, hot_score, scheme_score
from pydamon.damos.wmarks import wmark_wait_us

K = 1 << 10
M = 1 << 20
BP = 10000
ATTRS = Attrs(sample_interval_us=5000, aggr_interval_us=100_000, min_nr_regions=3)


class StandIn(Operations):
    """Regions stay as set; ``hot`` ranges are accessed at every sample; applies are recorded.

    ``apply_cost_us_per_mb`` advances the virtual clock while applying (an action's cost).
    """

    name = "standin"
    supported_ops_filters = frozenset({"anon"})

    def __init__(self, hot: list[tuple[int, int]] = (), apply_cost_us_per_mb: int = 0) -> None:
        self.hot = list(hot)
        self.calls: list[tuple[int, int, int, str]] = []
        self.apply_cost_us_per_mb = apply_cost_us_per_mb
        self.applied_fraction = 1.0

    def default_clock(self) -> VirtualClock:
        return VirtualClock()

    def init(self, ctx: Context) -> None:
        for t in ctx.targets:
            if not len(t.regions) and t.ranges:
                t.regions.set_regions(t.ranges)

    def prepare_access_checks(self, ctx: Context) -> None:
        for t in ctx.targets:
            t.regions.pick_sampling_addrs(ctx.rng)

    def check_accesses(self, ctx: Context) -> int:
        highest = 0
        for t in ctx.targets:
            addrs = t.regions.sampling_addr
            accessed = np.zeros(len(addrs), bool)
            for lo, hi in self.hot:
                accessed |= (addrs >= lo) & (addrs < hi)
            highest = max(highest, update_regions_access(ctx, t, accessed))
        return highest

    def get_scheme_score(self, ctx, target, region_index, scheme) -> int:
        # as the kernel's operations sets: ops-common's cold/hot scores
        return scheme_score(ctx, target, region_index, scheme)

    def apply_scheme(self, ctx, target, start, end, scheme) -> ApplyResult:
        ti = ctx.targets.index(target)
        self.calls.append((ti, start, end, str(scheme.action)))
        if self.apply_cost_us_per_mb:
            clock = ctx.clock
            clock.sleep_until(clock.now_us() + (end - start) * self.apply_cost_us_per_mb // M)
        done = int((end - start) * self.applied_fraction)
        return ApplyResult(sz_applied=done, sz_ops_filter_passed=done)


def make_ctx(
    schemes: list[Scheme],
    layout: list[list[tuple[int, int, int, int]]],
    ops: StandIn | None = None,
    attrs: Attrs = ATTRS,
    metrics: ManualMetrics | None = None,
) -> tuple[Context, StandIn, SchemesEngine]:
    """A context whose targets have regions ``(start, end, nr_accesses, age)``, engine ready."""
    ops = ops or StandIn()
    targets = []
    for regions in layout:
        t = Target(ranges=[(s, e) for s, e, _, _ in regions])
        t.regions.set_regions([(s, e) for s, e, _, _ in regions])
        t.regions.nr_accesses = np.array([n for _, _, n, _ in regions], np.int64)
        t.regions.nr_accesses_bp = t.regions.nr_accesses * BP
        t.regions.age = np.array([a for _, _, _, a in regions], np.int64)
        targets.append(t)
    ctx = Context(ops, targets, attrs, seed=0)
    engine = SchemesEngine(metrics=metrics or ManualMetrics())
    ctx.schemes_runner = engine
    # Context(schemes=...) would also do; set_schemes keeps our engine
    ctx.set_schemes(schemes)
    engine.init(ctx)
    return ctx, ops, engine


def run_apply(ctx: Context, engine: SchemesEngine, at_sis: int | None = None) -> None:
    """Run one ``kdamond_apply_schemes()`` at the given (or the next due) sample count."""
    if at_sis is None:
        at_sis = min(s.next_apply_sis for s in ctx.schemes)
    ctx.passed_sample_intervals = at_sis
    engine.apply(ctx)


def applied(ops: StandIn) -> list[tuple[int, int]]:
    return [(s, e) for _, s, e, _ in ops.calls]


# -- access pattern ----------------


def test_pattern_ranges_are_closed_and_use_the_moving_sum():
    regions = [
        (0, 4 * K, 4, 10),
        (4 * K, 12 * K, 5, 10),
        (12 * K, 24 * K, 6, 10),
        (24 * K, 40 * K, 5, 9),
        (40 * K, 64 * K, 5, 21),
    ]
    pattern = AccessPattern(
        min_sz_bytes=8 * K,
        max_sz_bytes=16 * K,
        min_nr_accesses=5,
        max_nr_accesses=5,
        min_age=10,
        max_age=20,
    )
    ctx, ops, engine = make_ctx([Scheme(pattern, Action.STAT)], [regions])
    run_apply(ctx, engine)
    # only the 8 KiB region has size, nr_accesses and age inside the closed ranges
    assert applied(ops) == [(4 * K, 12 * K)]

    # the pattern matches nr_accesses_bp // 10000, not the partial nr_accesses counter
    ctx.targets[0].regions.nr_accesses[:] = 0
    ctx.targets[0].regions.nr_accesses_bp[:] = 5 * BP + BP - 1
    ops.calls.clear()
    run_apply(ctx, engine)
    # (the 12 KiB region had nr_accesses 6; its moving sum now says 5)
    assert applied(ops) == [(4 * K, 12 * K), (12 * K, 24 * K)]


def test_pattern_in_percent_and_usec_follows_the_intervals():
    # 20 samples per aggregation: 50% is 10 samples; 1 s is 10 aggregation intervals
    pattern = AccessPattern(
        min_nr_accesses=50,
        max_nr_accesses=50,
        nr_accesses_unit=NrAccessesUnit.PERCENT,
        min_age=1_000_000,
        age_unit=AgeUnit.USEC,
    )
    assert pattern.resolve(ATTRS)[2:5] == (10, 10, 10)
    regions = [(0, 4 * K, 10, 10), (4 * K, 8 * K, 10, 9), (8 * K, 12 * K, 11, 10)]
    ctx, ops, engine = make_ctx([Scheme(pattern, Action.STAT)], [regions])
    run_apply(ctx, engine)
    assert applied(ops) == [(0, 4 * K)]


def test_age_is_reset_by_actions_but_not_by_stat():
    regions = [(0, 4 * K, 0, 7)]
    ctx, _, engine = make_ctx([Scheme(action=Action.STAT)], [regions])
    run_apply(ctx, engine)
    assert int(ctx.targets[0].regions.age[0]) == 7
    ctx, _, engine = make_ctx([Scheme(action=Action.PAGEOUT)], [regions])
    run_apply(ctx, engine)
    assert int(ctx.targets[0].regions.age[0]) == 0


def test_apply_interval_counts_sample_intervals():
    scheme = Scheme(action=Action.STAT, apply_interval_us=300_000)
    ctx, ops, engine = make_ctx([scheme], [[(0, 4 * K, 0, 0)]])
    assert scheme.next_apply_sis == 60  # 300 ms / 5 ms
    run_apply(ctx, engine, 59)
    assert ops.calls == []
    run_apply(ctx, engine, 60)
    assert len(ops.calls) == 1 and scheme.next_apply_sis == 120


def test_stats_and_tried_regions():
    regions = [(0, 4 * K, 0, 1), (4 * K, 12 * K, 3, 1)]
    scheme = Scheme(AccessPattern(max_nr_accesses=0), Action.PAGEOUT)
    ctx, ops, engine = make_ctx([scheme], [regions])
    ops.applied_fraction = 0.5
    run_apply(ctx, engine)
    st = scheme.stats
    assert (st.nr_tried, st.sz_tried, st.nr_applied, st.sz_applied) == (1, 4 * K, 1, 2 * K)
    assert st.sz_ops_filter_passed == 2 * K
    assert [
        (r.start, r.end, r.nr_accesses, r.age, r.sz_filter_passed) for r in scheme.tried_regions
    ] == [(0, 4 * K, 0, 1, 2 * K)]
    assert scheme.tried_bytes == 4 * K


# -- quotas ----------------


def test_size_quota_splits_the_last_region_and_resumes_there_next_window():
    regions = [(i * M, (i + 1) * M, 0, 5) for i in range(6)]
    quota = Quota(sz=2 * M + 512 * K, reset_interval_ms=1000)
    scheme = Scheme(AccessPattern(max_nr_accesses=0), Action.PAGEOUT, quota=quota)
    ctx, ops, engine = make_ctx([scheme], [regions])
    run_apply(ctx, engine)
    # the third region is split so exactly the quota is applied
    assert applied(ops) == [(0, M), (M, 2 * M), (2 * M, 2 * M + 512 * K)]
    assert scheme.quota_state.charged_sz == 2 * M + 512 * K
    assert scheme.quota_state.charge_addr_from == 2 * M + 512 * K
    # same window: quota full, nothing more
    ops.calls.clear()
    run_apply(ctx, engine)
    assert ops.calls == []
    # next window resumes where the last one stopped, not from the first region again
    ctx.clock.sleep_until(ctx.clock.now_us() + 1_000_000)
    ops.calls.clear()
    run_apply(ctx, engine)
    # (the untouched rest of the split region merged back with its equal neighbour)
    assert applied(ops)[0][0] == 2 * M + 512 * K
    assert sum(e - s for s, e in applied(ops)) == 2 * M + 512 * K
    assert scheme.stats.qt_exceeds == 1


def test_quota_never_exceeded_per_window_over_a_run():
    ops = StandIn(hot=[(0, 8 * M)])
    quota = Quota(sz=3 * M, reset_interval_ms=500)
    pattern = AccessPattern(max_nr_accesses=0, min_age=3)
    scheme = Scheme(pattern, Action.PAGEOUT, quota=quota)
    ctx = Context(ops, [Target(ranges=[(0, 32 * M)])], ATTRS, seed=3)
    ctx.set_schemes([scheme])
    per_window: dict[int, int] = {}
    seen = 0
    hot_bytes = [0]

    def account(c: Context) -> None:
        nonlocal seen
        for _, s, e, _ in ops.calls[seen:]:
            window = scheme.quota_state.charged_from_us
            per_window[window] = per_window.get(window, 0) + e - s
            hot_bytes[0] += max(min(e, 8 * M) - s, 0)
        seen = len(ops.calls)

    ctx.add_callback("after_aggregation", account)
    ctx.run(nr_aggregations=80)
    account(ctx)
    assert per_window and max(per_window.values()) <= 3 * M
    # all 24 MiB of cold memory got its turn across windows
    assert sum(per_window.values()) >= 20 * M
    # only regions straddling the hot/cold boundary can carry a few hot pages
    assert hot_bytes[0] <= 256 * K


def test_min_score_prioritizes_the_coldest_regions():
    # unaccessed regions of different ages: older = colder = higher cold score
    ages = [2, 40, 5, 80, 1, 20]
    regions = [(i * M, (i + 1) * M, 0, a) for i, a in enumerate(ages)]
    quota = Quota(
        sz=2 * M, reset_interval_ms=1000, weight_nr_accesses_permil=0, weight_age_permil=1000
    )
    attrs = Attrs(sample_interval_us=5000, aggr_interval_us=1_000_000, min_nr_regions=3)
    scheme = Scheme(AccessPattern(max_nr_accesses=0), Action.PAGEOUT, quota=quota)
    ctx, ops, engine = make_ctx([scheme], [regions], attrs=attrs)
    run_apply(ctx, engine)
    assert sorted(applied(ops)) == [(M, 2 * M), (3 * M, 4 * M)]  # ages 40 and 80
    scores = [cold_score(0, a, attrs, 0, 1000) for a in ages]
    assert scheme.quota_state.min_score == sorted(scores)[-2]


def test_score_functions_match_the_kernel_formula():
    attrs = Attrs(sample_interval_us=5000, aggr_interval_us=100_000)  # 20 samples
    # freq 10/20 = 50; age 64 aggr = 6.4 s -> log 3 -> (3 + 32) * 100 / 32 / 2 = 54
    assert hot_score(10, 64, attrs, 1, 1) == (50 + 54) // 2 * 99 // 100
    # unaccessed: age counts against hotness: (-3 + 32) * 100 / 32 / 2 = 45
    assert hot_score(0, 64, attrs, 0, 1) == 45 * 99 // 100
    assert cold_score(0, 64, attrs, 0, 1) == 99 - 45 * 99 // 100
    assert hot_score(20, 0, attrs, 1, 0) == 99
    assert hot_score(3, 3, attrs, 0, 0) == 0  # no weights: zero hotness
    # huge ages saturate at log 32
    assert hot_score(0, 10**12, attrs, 0, 1) == 0


def test_min_score_histogram_walk():
    hist = [0] * 100
    hist[90], hist[50], hist[10] = 4 * K, 8 * K, 16 * K
    assert min_score_for(hist, 90, 4 * K) == 90
    assert min_score_for(hist, 90, 5 * K) == 50
    assert min_score_for(hist, 90, 10**9) == 0


def test_time_quota_converts_to_size_at_the_observed_throughput():
    quota = Quota(ms=2, reset_interval_ms=100)
    state = QuotaState()
    set_effective_quota(quota, state, lambda: 0)
    assert state.esz == 4096 * 1024 * 2  # the initial guess: PAGE_SIZE * 1024 bytes per ms
    state.total_charged_sz = 10 * M
    state.total_charged_ns = 5_000_000  # 5 ms -> 2 MiB/ms
    set_effective_quota(quota, state, lambda: 0)
    assert state.esz == 4 * M
    quota.sz = M
    set_effective_quota(quota, state, lambda: 0)
    assert state.esz == M  # the size quota caps it


def test_time_quota_in_the_loop_charges_apply_time():
    # applying costs 1 ms of (virtual) time per MiB; a 2 ms quota allows about 2 MiB a window
    ops = StandIn(apply_cost_us_per_mb=1000)
    quota = Quota(ms=2, reset_interval_ms=200)
    scheme = Scheme(AccessPattern(max_nr_accesses=0), Action.PAGEOUT, quota=quota)
    ctx = Context(ops, [Target(ranges=[(0, 64 * M)])], ATTRS, seed=1)
    ctx.set_schemes([scheme])
    ctx.run(nr_aggregations=30)
    st = scheme.quota_state
    assert st.total_charged_ns > 0
    assert abs(st.esz - 2 * M) <= 2 * M // 100  # throughput converged to ~1 MiB/ms


# -- quota goals ----------------


def _kernel_feed_loop(last: int, score: int) -> int:
    """The kernel's documented formula: max(last * ((goal - score) / goal + 1), min_input)."""
    goal = 10000
    if score >= 2 * goal:
        return 10000
    return max(int(last * ((goal - score) / goal + 1)), 10000)


@pytest.mark.parametrize("score", [0, 1, 5000, 9999, 10000, 10001, 15000, 19999, 20000, 50000])
def test_feedback_loop_matches_the_kernel_formula(score):
    for last in (10000, 123456, 10**9, 10**15):
        assert abs(feed_loop_next_input(last, score) - _kernel_feed_loop(last, score)) <= 1


def test_user_input_goal_tunes_the_effective_quota():
    goal = QuotaGoal(GoalMetric.USER_INPUT, target_value=100, current_value=50)
    quota = Quota(goals=[goal], reset_interval_ms=100)
    state = QuotaState()
    esz_bp = 0
    for current in (50, 50, 80, 150, 300, 100):
        goal.current_value = current
        set_effective_quota(quota, state, lambda: goal.current_value * 10000 // goal.target_value)
        esz_bp = feed_loop_next_input(max(esz_bp, 10000), current * 10000 // 100)
        assert state.esz_bp == esz_bp
        assert state.esz == esz_bp // 10000


def test_temporal_tuner_is_all_or_nothing():
    quota = Quota(sz=8 * M, goals=[QuotaGoal(target_value=100)], goal_tuner=GoalTuner.TEMPORAL)
    state = QuotaState()
    set_effective_quota(quota, state, lambda: 9999)
    assert state.esz == 8 * M
    set_effective_quota(quota, state, lambda: 10000)
    assert state.esz == 0


def test_psi_goal_measures_pressure_per_window_through_the_metrics_source():
    metrics = ManualMetrics(psi_total_us=1_000)
    goal = QuotaGoal(GoalMetric.SOME_MEM_PSI_US, target_value=1000)
    scheme = Scheme(
        AccessPattern(max_nr_accesses=0),
        Action.PAGEOUT,
        quota=Quota(goals=[goal], reset_interval_ms=100),
    )
    ctx, _, engine = make_ctx([scheme], [[(0, 64 * M, 0, 5)]], metrics=metrics)
    run_apply(ctx, engine)
    # first measurement only records the counter: no effect (score = goal)
    assert goal.current_value == 1000 and scheme.quota_state.esz_bp == 10000
    esz = []
    for stall_us in (0, 0, 0, 500, 1500, 1500):
        metrics.psi_total_us += stall_us
        ctx.clock.sleep_until(ctx.clock.now_us() + 100_000)
        run_apply(ctx, engine, ctx.passed_sample_intervals + 20)
        assert goal.current_value == stall_us
        esz.append(scheme.quota_state.esz)
    # no pressure: the quota grows; pressure above the goal: it shrinks
    assert esz[0] < esz[1] < esz[2] < esz[3]
    assert esz[5] < esz[4] < esz[3]


# -- filters ----------------


def test_addr_filter_splits_regions_at_its_bounds():
    regions = [(0, 16 * K, 0, 0)]
    f = Filter(FilterType.ADDR, matching=True, allow=False, addr_start=4 * K, addr_end=8 * K)
    scheme = Scheme(action=Action.PAGEOUT, filters=[f])
    ctx, ops, engine = make_ctx([scheme], [regions])
    run_apply(ctx, engine)
    assert applied(ops) == [(0, 4 * K), (8 * K, 16 * K)]
    # the rejected piece was not tried
    assert scheme.stats.nr_tried == 2 and scheme.stats.sz_tried == 12 * K


def test_filters_first_match_decides_and_default_is_opposite_of_last():
    regions = [(0, 4 * K, 0, 0)]
    layout = [regions, regions, regions]
    # a lone allow filter: everything else is rejected by default
    only_t1 = Scheme(
        action=Action.STAT, filters=[Filter(FilterType.TARGET, allow=True, target_idx=1)]
    )
    ctx, ops, engine = make_ctx([only_t1], layout)
    run_apply(ctx, engine)
    assert [c[0] for c in ops.calls] == [1]
    # a lone reject filter: everything else is allowed
    not_t1 = Scheme(
        action=Action.STAT, filters=[Filter(FilterType.TARGET, allow=False, target_idx=1)]
    )
    ctx, ops, engine = make_ctx([not_t1], layout)
    run_apply(ctx, engine)
    assert [c[0] for c in ops.calls] == [0, 2]
    # first match wins: allow target 1 beats the later reject of everything but target 2
    mixed = Scheme(
        action=Action.STAT,
        filters=[
            Filter(FilterType.TARGET, allow=True, target_idx=1),
            Filter(FilterType.TARGET, matching=False, allow=False, target_idx=2),
        ],
    )
    ctx, ops, engine = make_ctx([mixed], layout)
    run_apply(ctx, engine)
    # target 0: not 2 -> rejected; target 1: allowed first; target 2: no match -> default
    # is the opposite of the last filter's (reject) -> allowed
    assert [c[0] for c in ops.calls] == [1, 2]
    assert mixed.stats.nr_tried == 2


def test_core_default_allows_when_ops_filters_exist():
    scheme = Scheme(
        action=Action.STAT,
        filters=[
            Filter(FilterType.TARGET, allow=True, target_idx=0),
            Filter(FilterType.ANON, allow=True),
        ],
    )
    ctx, ops, engine = make_ctx([scheme], [[(0, 4 * K, 0, 0)], [(0, 4 * K, 0, 0)]])
    assert not scheme.core_filters_default_reject and scheme.ops_filters_default_reject
    seen = []
    ops.apply_scheme = lambda c, t, s, e, sch: (
        seen.append((c.targets.index(t), sch.core_filters_allowed)) or ApplyResult(e - s, e - s)
    )
    run_apply(ctx, engine)
    # target 0 explicitly allowed (ops filters must allow it too); target 1 left to ops filters
    assert seen == [(0, True), (1, False)]


# -- watermarks ----------------


def test_watermark_state_machine():
    s = Scheme(wmarks=Watermarks(WmarkMetric.FREE_MEM_RATE, 5000, high=500, mid=400, low=200))
    steps = [
        (600, 5000, False),  # above high: off
        (450, 5000, False),  # between mid and high while off: stays off
        (400, 5000, False),  # at mid while off: still off (activation needs < mid)
        (399, 0, True),  # below mid: on
        (450, 0, True),  # between mid and high while on: stays on
        (500, 0, True),  # at high: still on
        (501, 5000, False),  # above high: off
        (300, 0, True),  # between low and mid: on
        (200, 0, True),  # at low: on
        (199, 5000, False),  # below low: off
        (300, 0, True),
    ]
    for value, wait, active in steps:
        assert wmark_wait_us(s, value) == wait, value
        assert s.wmarks_activated is active, value
    assert wmark_wait_us(s, None) == 0  # unreadable metric: keep going
    s.wmarks.metric = WmarkMetric.NONE
    assert wmark_wait_us(s, 999) == 0


def test_inactive_schemes_pause_monitoring_until_watermarks_allow():
    metrics = ManualMetrics(free_mem_permil=900)
    wm = Watermarks(WmarkMetric.FREE_MEM_RATE, interval_us=50_000, high=500, mid=400, low=100)
    scheme = Scheme(AccessPattern(max_nr_accesses=0), Action.PAGEOUT, wmarks=wm)
    ops = StandIn()
    ctx = Context(ops, [Target(ranges=[(0, 8 * M)])], ATTRS, seed=0)
    ctx.schemes_runner = SchemesEngine(metrics=metrics)
    ctx.set_schemes([scheme])
    checks = []

    def after_wmarks_check(c: Context) -> bool:
        checks.append(c.clock.now_us())
        if len(checks) == 10:
            metrics.free_mem_permil = 300  # memory got short: between low and mid
        return False

    ctx.add_callback("after_wmarks_check", after_wmarks_check)
    ctx.run(duration_us=2_000_000)
    assert len(checks) == 10  # checked every interval while inactive, no monitoring meanwhile
    assert np.all(np.diff(checks) == 50_000)
    assert scheme.wmarks_activated
    # monitoring ran only for the time after activation
    assert ctx.passed_sample_intervals == (2_000_000 - 500_000) // 5000
    assert ops.calls  # and the scheme acted


def test_invalid_target_drops_the_resume_point():
    regions = [(i * M, (i + 1) * M, 0, 5) for i in range(4)]
    scheme = Scheme(
        AccessPattern(max_nr_accesses=0),
        Action.PAGEOUT,
        quota=Quota(sz=M + 512 * K, reset_interval_ms=1000),
    )
    ctx, ops, engine = make_ctx([scheme], [regions, regions])
    run_apply(ctx, engine)
    assert scheme.quota_state.charge_target_from == 0
    ctx.targets[0].valid = False
    ctx.clock.sleep_until(ctx.clock.now_us() + 1_000_000)
    ops.calls.clear()
    run_apply(ctx, engine)
    # target 1 is served from its start, not skipped for target 0's stale resume point
    assert ops.calls[0][:2] == (1, 0)
    assert all(c[0] == 1 for c in ops.calls)


def test_quota_split_pieces_merge_back_when_nothing_differs():
    regions = [(0, M, 0, 5), (M, 2 * M, 3, 5), (2 * M, 3 * M, 0, 5)]
    stat = Scheme(
        AccessPattern(max_nr_accesses=0),
        Action.STAT,
        quota=Quota(sz=512 * K, reset_interval_ms=1000),
    )
    ctx, ops, engine = make_ctx([stat], [regions])
    run_apply(ctx, engine)
    # split at 512 KiB for the quota, then merged back: stat changed nothing
    assert applied(ops) == [(0, 512 * K)]
    assert ctx.targets[0].regions.ranges() == [(0, M), (M, 2 * M), (2 * M, 3 * M)]
    page = Scheme(
        AccessPattern(max_nr_accesses=0),
        Action.PAGEOUT,
        quota=Quota(sz=512 * K, reset_interval_ms=1000),
    )
    ctx, ops, engine = make_ctx([page], [regions])
    run_apply(ctx, engine)
    # pageout reset the first piece's age: the pieces differ and stay apart
    assert ctx.targets[0].regions.ranges()[:2] == [(0, 512 * K), (512 * K, M)]


def test_schemes_given_to_the_context_run_with_the_engine():
    ops = StandIn(hot=[(0, 4 * M)])
    scheme = Scheme(AccessPattern(min_nr_accesses=1), Action.STAT)
    ctx = Context(ops, [Target(ranges=[(0, 16 * M)])], ATTRS, seed=0)
    ctx.set_schemes([scheme])
    ctx.run(nr_aggregations=10)
    assert isinstance(ctx.schemes_runner, SchemesEngine)
    assert scheme.stats.nr_tried > 0
    assert all(r.end <= 4 * M + 512 * K for r in scheme.tried_regions)


def test_non_scheme_objects_are_refused_with_a_clear_error():
    ctx = Context(StandIn(), [Target(ranges=[(0, 4 * M)])], ATTRS, seed=0)
    ctx.set_schemes(["4K max 0 0 1s max pageout"])
    with pytest.raises(TypeError, match="parse_schemes"):
        ctx.run(nr_aggregations=1)


def test_ops_filters_the_ops_set_cannot_evaluate_are_refused():
    scheme = Scheme(action=Action.PAGEOUT, filters=[Filter(FilterType.YOUNG)])
    with pytest.raises(SchemeError, match="standin operations set cannot evaluate young"):
        make_ctx([scheme], [[(0, 4 * K, 0, 0)]])
