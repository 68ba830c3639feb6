"""The monitoring loop (kdamond_fn) driven by a tiny deterministic operations set.

``PatternOps`` runs on a :class:`VirtualClock`: a region is found accessed with a probability
that depends on where its sampling address falls, drawn from the context's seeded generator.
Property tests (hypothesis) check the regions' invariants after any run; the other tests pin the
loop's order, its threading API (``start``/``stop``/``call``/``set_attrs``) and reproducibility.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pydamon.core import (
    PAGE_SIZE,
    Attrs,
    CallCanceled,
    Context,
    IntervalsGoal,
    Regions,
    Target,
    VirtualClock,
)
from pydamon.core.operations import Operations, update_regions_access
from pydamon.core.regions import align_down, align_up

#: prob(target_index, sampling_addrs) -> access probability per region
AccessPattern = Callable[[int, np.ndarray], np.ndarray]


def stop_when(cond):
    """An after-aggregation/wmarks callback stopping the loop once ``cond(ctx)`` holds."""

    def check(c: Context) -> None:
        if cond(c):
            c.stop()

    return check


def constant(p: float) -> AccessPattern:
    return lambda _ti, addrs: np.full(addrs.shape, p)


class PatternOps(Operations):
    """Test-only operations set: accesses drawn from a per-address probability pattern."""

    name = "pattern"

    def __init__(self, pattern: AccessPattern | None = None) -> None:
        self.pattern = pattern or constant(0.0)
        self.events: list[str] = []
        self.record = False
        self.nr_updates = 0
        self.valid_until_sample: int | None = None
        self.on_prepare: Callable[[Context], None] | None = None

    def default_clock(self):
        return VirtualClock()

    def init(self, ctx: Context) -> None:
        """Set targets' regions to their ranges, split so none exceeds total/min_nr_regions."""
        for t in ctx.targets:
            if not len(t.regions) and t.ranges:
                t.regions.set_regions(t.ranges)
        total = sum(t.regions.total_size for t in ctx.targets)
        limit = max(align_down(total // ctx.attrs.min_nr_regions, PAGE_SIZE), PAGE_SIZE)
        for t in ctx.targets:
            i = 0
            while i < len(t.regions):
                if int(t.regions.sizes[i]) > limit:
                    t.regions.split_at(i, limit)
                i += 1

    def update(self, ctx: Context) -> None:
        self.nr_updates += 1

    def prepare_access_checks(self, ctx: Context) -> None:
        if self.record:
            self.events.append("prepare")
        if self.on_prepare is not None:
            self.on_prepare(ctx)
        for t in ctx.targets:
            t.regions.pick_sampling_addrs(ctx.rng)

    def check_accesses(self, ctx: Context) -> int:
        if self.record:
            self.events.append("check")
        max_nr = 0
        for ti, t in enumerate(ctx.targets):
            r = t.regions
            accessed = ctx.rng.random(len(r)) < self.pattern(ti, r.sampling_addr)
            max_nr = max(max_nr, update_regions_access(ctx, t, accessed))
        return max_nr

    def target_valid(self, ctx: Context, target: Target) -> bool:
        return self.valid_until_sample is None or (
            ctx.passed_sample_intervals < self.valid_until_sample
        )


def union(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for s, e in sorted(ranges):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def check_regions(
    ctx: Context, expected_unions: list[list[tuple[int, int]]], min_possible: bool = True
) -> None:
    attrs = ctx.attrs
    for t, expect in zip(ctx.targets, expected_unions):
        r = t.regions
        r.check_invariants()
        assert union(r.ranges()) == expect, "regions left the target's ranges"
        assert (r.nr_accesses >= 0).all() and (r.age >= 0).all()
        assert (r.nr_accesses <= attrs.aggr_samples).all()
        assert (r.nr_accesses_bp >= 0).all()
    assert ctx.nr_regions <= attrs.max_nr_regions
    if min_possible:  # the address space has at least min_nr_regions pages
        assert ctx.nr_regions >= attrs.min_nr_regions


# -- properties --
@st.composite
def target_ranges(draw) -> list[tuple[int, int]]:
    """1..3 sorted, disjoint (possibly adjacent, possibly unaligned) ranges."""
    ranges = []
    addr = draw(st.integers(0, 1 << 20)) * PAGE_SIZE
    for _ in range(draw(st.integers(1, 3))):
        addr += draw(st.integers(0, 64)) * PAGE_SIZE
        size = draw(st.integers(1, 400)) * PAGE_SIZE
        jitter = draw(st.sampled_from([0, 0, 1, 100]))  # unaligned bounds get aligned
        ranges.append((addr + jitter, addr + size))
        addr += size
    return ranges


@st.composite
def monitoring_setups(draw):
    targets = draw(st.lists(target_ranges(), min_size=1, max_size=3))
    total_pages = sum(
        (align_up(e, PAGE_SIZE) - align_down(s, PAGE_SIZE)) // PAGE_SIZE
        for ranges in targets
        for s, e in ranges
    )
    min_nr = draw(st.integers(3, min(30, max(3, total_pages))))
    # initial regions: each at most align_down(total / min_nr_regions)
    limit = max(align_down(total_pages * PAGE_SIZE // min_nr, PAGE_SIZE), PAGE_SIZE)
    n_init = sum(
        -(-(align_up(e, PAGE_SIZE) - align_down(s, PAGE_SIZE)) // limit)
        for ranges in targets
        for s, e in ranges
    )
    max_nr = max(min_nr, n_init) + draw(st.integers(0, 100))
    sample_us = draw(st.integers(1, 20)) * 500
    aggr_samples = draw(st.integers(1, 25))
    attrs = Attrs(
        sample_interval_us=sample_us,
        aggr_interval_us=sample_us * aggr_samples,
        ops_update_interval_us=sample_us * draw(st.integers(1, 50)),
        min_nr_regions=min_nr,
        max_nr_regions=max_nr,
    )
    levels = st.sampled_from([0.0, 0.02, 0.3, 0.7, 0.98, 1.0])
    slices = [draw(st.lists(levels, min_size=8, max_size=8)) for _ in targets]
    return {
        "targets": targets,
        "attrs": attrs,
        "slices": slices,
        "seed": draw(st.integers(0, 2**32 - 1)),
        "nr_aggregations": draw(st.integers(1, 8)),
        "total_pages": total_pages,
    }


def slice_pattern(targets, slices) -> AccessPattern:
    """Access probability by which eighth of the target's span an address falls in."""
    spans = [(ranges[0][0], ranges[-1][1]) for ranges in targets]

    def prob(ti: int, addrs: np.ndarray) -> np.ndarray:
        lo, hi = spans[ti]
        idx = np.clip((addrs - lo) * 8 // max(hi - lo, 1), 0, 7)
        return np.asarray(slices[ti])[idx]

    return prob


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(monitoring_setups())
def test_regions_invariants_hold_after_any_run(setup):
    targets = [Target(ranges=list(r)) for r in setup["targets"]]
    ops = PatternOps(slice_pattern(setup["targets"], setup["slices"]))
    ctx = Context(ops, targets, setup["attrs"], seed=setup["seed"])
    expected = [
        union([(align_down(s, PAGE_SIZE), align_up(e, PAGE_SIZE)) for s, e in r])
        for r in setup["targets"]
    ]
    checks = {"n": 0}

    min_possible = setup["total_pages"] >= setup["attrs"].min_nr_regions

    def check(c: Context) -> None:
        check_regions(c, expected, min_possible)
        checks["n"] += 1

    ops.on_prepare = check  # every sample, after the previous step's merge/split
    ctx.add_callback("after_aggregation", lambda c: check(c))  # right after merging
    ctx.run(nr_aggregations=setup["nr_aggregations"])
    check_regions(ctx, expected, min_possible)
    assert ctx.nr_aggregations == setup["nr_aggregations"]
    assert checks["n"] >= setup["nr_aggregations"]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(monitoring_setups(), st.integers(3, 50))
def test_invariants_hold_across_online_attrs_updates(setup, new_max):
    """Intervals and max_nr_regions changed between runs: results rescaled, invariants kept."""
    targets = [Target(ranges=list(r)) for r in setup["targets"]]
    ops = PatternOps(slice_pattern(setup["targets"], setup["slices"]))
    attrs = setup["attrs"]
    ctx = Context(ops, targets, attrs, seed=setup["seed"])
    expected = [
        union([(align_down(s, PAGE_SIZE), align_up(e, PAGE_SIZE)) for s, e in r])
        for r in setup["targets"]
    ]
    ctx.run(nr_aggregations=2)
    before = ctx.nr_regions
    new_attrs = Attrs(
        sample_interval_us=attrs.sample_interval_us * 2,
        aggr_interval_us=attrs.aggr_interval_us * 2,
        min_nr_regions=attrs.min_nr_regions,
        max_nr_regions=max(attrs.min_nr_regions, new_max),
    )
    ctx.set_attrs(new_attrs)
    assert all((t.regions.nr_accesses <= new_attrs.aggr_samples).all() for t in ctx.targets)
    ctx.run(nr_aggregations=2)
    for t, expect in zip(ctx.targets, expected):
        t.regions.check_invariants()
        assert union(t.regions.ranges()) == expect
    # a lowered max never makes the count grow; merging pushes it down (bounded by the size
    # limit, so it may stay above a max below twice min_nr_regions)
    assert ctx.nr_regions <= max(before, new_attrs.max_nr_regions)
    if setup["total_pages"] >= new_attrs.min_nr_regions:
        assert ctx.nr_regions >= new_attrs.min_nr_regions


# -- loop order and limits --
def small_ctx(ops: PatternOps | None = None, seed: int | None = 1, **attrs_kw) -> Context:
    kw = dict(
        sample_interval_us=1000, aggr_interval_us=10_000, min_nr_regions=3, max_nr_regions=100
    )
    kw.update(attrs_kw)
    ranges = [(0x10000000, 0x10000000 + 256 * PAGE_SIZE)]
    return Context(
        ops or PatternOps(constant(0.5)), [Target(ranges=ranges)], Attrs(**kw), seed=seed
    )


def test_loop_order_matches_kdamond_fn():
    ops = PatternOps(constant(0.5))
    ctx = small_ctx(ops, sample_interval_us=1000, aggr_interval_us=3000)
    ops.record = True
    ctx.add_callback("after_aggregation", lambda c: ops.events.append("after_aggregation"))
    ctx.run(nr_aggregations=2)
    assert ops.events[:9] == [
        "prepare",
        "check",
        "prepare",
        "check",
        "prepare",
        "check",
        "after_aggregation",
        "prepare",
        "check",
    ]
    assert ctx.passed_sample_intervals == 6
    assert ctx.clock.now_us() == 6000  # virtual time: one sample interval per step


def test_repeat_call_runs_after_every_sampling_and_after_aggregation_callbacks():
    ops = PatternOps(constant(0.5))
    ctx = small_ctx(ops, sample_interval_us=1000, aggr_interval_us=2000)
    ops.record = True
    ctx.add_callback("after_aggregation", lambda c: ops.events.append("after_aggregation"))
    entered = threading.Event()
    go = threading.Event()

    def hold_first(c):
        if not entered.is_set():
            entered.set()
            go.wait(5)

    ops.on_prepare = hold_first
    ctx.add_callback("after_aggregation", stop_when(lambda c: c.nr_aggregations >= 2))
    ctx.start()
    assert entered.wait(5)
    ctx.call(lambda c: ops.events.append("call"), repeat=True)
    go.set()
    assert ctx.wait(5)
    assert ops.events == [
        "prepare",
        "check",
        "call",
        "prepare",
        "check",
        "after_aggregation",
        "call",
        "prepare",
        "check",
        "call",
        "prepare",
        "check",
        "after_aggregation",  # the stopping callback: no call after it
    ]


def test_callback_returning_true_stops_and_before_terminate_runs_once():
    ctx = small_ctx()
    seen = []
    ctx.add_callback("after_aggregation", stop_when(lambda c: c.nr_aggregations == 3))
    ctx.add_callback("before_terminate", lambda c: seen.append(c.nr_aggregations))
    ctx.run()
    assert ctx.nr_aggregations == 3
    assert seen == [3]
    assert not ctx.is_running


def test_all_targets_invalid_stops_the_loop():
    ops = PatternOps()
    ops.valid_until_sample = 25
    ctx = small_ctx(ops)
    ended = []
    ctx.add_callback("before_terminate", lambda c: ended.append(c.passed_sample_intervals))
    ctx.run()
    assert ended == [25]
    assert not ctx.targets[0].valid


def test_ops_update_runs_at_its_interval():
    ops = PatternOps()
    ctx = small_ctx(ops, ops_update_interval_us=7000)
    ctx.run(duration_us=70_000)
    assert ctx.passed_sample_intervals == 70
    assert ops.nr_updates == 10


def test_split_uses_three_pieces_when_the_count_did_not_change():
    ctx = small_ctx(max_nr_regions=1000)
    t = ctx.targets[0]
    t.regions = Regions([(i * 100 * PAGE_SIZE, (i + 1) * 100 * PAGE_SIZE) for i in range(4)])
    ctx._split_regions()
    assert len(t.regions) == 8  # two pieces each
    # merged back to the same count as at the last split: maybe the middle of each region
    # differs, so three pieces each
    t.regions = Regions([(i * 100 * PAGE_SIZE, (i + 1) * 100 * PAGE_SIZE) for i in range(4)])
    ctx._split_regions()
    assert len(t.regions) == 12
    t.regions.check_invariants()
    # over max_nr_regions / 2: no split at all
    ctx.set_attrs(
        Attrs(sample_interval_us=1000, aggr_interval_us=10_000, min_nr_regions=3, max_nr_regions=23)
    )
    ctx._split_regions()
    assert len(t.regions) == 12


def test_intervals_autotuning_in_the_loop():
    goal = IntervalsGoal(access_bp=400, aggrs=3, min_sample_us=1000, max_sample_us=8000)
    seen = []
    ctx = small_ctx(PatternOps(constant(0.0)), intervals_goal=goal)
    ctx.add_callback("after_aggregation", lambda c: seen.append(c.attrs.sample_interval_us))
    ctx.run(nr_aggregations=13)
    # no access at all: the sample interval doubles every 3 aggregations, up to the max
    assert seen == [1000] * 3 + [2000] * 3 + [4000] * 3 + [8000] * 4
    assert ctx.attrs.aggr_interval_us == 8000 * 10  # aggr/sample ratio preserved

    seen.clear()
    ctx = small_ctx(
        PatternOps(constant(1.0)),
        sample_interval_us=8000,
        aggr_interval_us=80_000,
        intervals_goal=goal,
    )
    ctx.add_callback("after_aggregation", lambda c: seen.append(c.attrs.sample_interval_us))
    ctx.run(nr_aggregations=13)
    # every sample accessed: halves every 3 aggregations (at most by half), down to the min
    assert seen == [8000] * 3 + [4000] * 3 + [2000] * 3 + [1000] * 4
    assert ctx.attrs.aggr_interval_us == 1000 * 10


def test_nr_accesses_bp_matches_nr_accesses_at_aggregation_end():
    # 20 samples per aggregation divide 10000: the pseudo moving sum is exact at the boundary.
    bad = []

    def check(c):
        r = c.targets[0].regions
        if not (r.nr_accesses_bp == r.nr_accesses * 10000).all():
            bad.append(c.nr_aggregations)

    ctx = small_ctx(PatternOps(constant(0.4)), sample_interval_us=1000, aggr_interval_us=20_000)
    ctx.add_callback("after_aggregation", check)
    ctx.run(nr_aggregations=10)
    assert bad == []


# -- threads --
def test_call_from_another_thread_runs_inside_the_loop():
    ctx = small_ctx(seed=None)
    ctx.start()
    try:
        where = ctx.call(lambda c: (threading.current_thread().name, c.passed_sample_intervals))
        assert where[0] == "pydamon-kdamond"
        assert where[1] >= 1
        with pytest.raises(ZeroDivisionError):
            ctx.call(lambda c: 1 // 0)  # errors reach the caller; the loop goes on
        assert ctx.is_running
        assert ctx.call(lambda c: 42) == 42
    finally:
        ctx.stop()
    assert ctx.wait(5)
    assert not ctx.is_running
    # once stopped, call() runs the function at once in the caller's thread
    assert ctx.call(lambda c: threading.current_thread().name) == threading.current_thread().name


def test_stop_ends_a_started_loop_and_before_terminate_runs():
    ctx = small_ctx()
    ended = threading.Event()
    ctx.add_callback("before_terminate", lambda c: ended.set())
    ctx.start()
    with pytest.raises(RuntimeError):
        ctx.start()
    time.sleep(0.05)
    ctx.stop()
    assert ctx.wait(5)
    assert ended.is_set()
    assert ctx.nr_aggregations > 0


def test_call_pending_when_the_loop_ends_is_canceled():
    ops = PatternOps()
    ctx = small_ctx(ops, sample_interval_us=1000, aggr_interval_us=1000)
    entered, go = threading.Event(), threading.Event()

    def hold_first(c):
        if not entered.is_set():
            entered.set()
            go.wait(5)

    ops.on_prepare = hold_first
    ctx.add_callback("after_aggregation", lambda c: c.stop())  # stops before kdamond_call()
    ctx.start()
    assert entered.wait(5)
    outcome = []

    def caller():
        try:
            ctx.call(lambda c: outcome.append("ran"))
        except CallCanceled:
            outcome.append("canceled")

    th = threading.Thread(target=caller)
    th.start()
    deadline = time.monotonic() + 5
    while not ctx._calls and time.monotonic() < deadline:
        time.sleep(0.001)
    go.set()
    th.join(5)
    assert ctx.wait(5)
    assert outcome == ["canceled"]


def test_call_racing_with_loop_end_never_hangs():
    for _ in range(20):
        ctx = small_ctx(seed=None)
        ctx.add_callback("after_aggregation", stop_when(lambda c: c.nr_aggregations >= 2))
        ctx.start()
        results = []
        for _ in range(50):
            try:
                results.append(ctx.call(lambda c: 1))
            except CallCanceled:
                results.append(0)
        assert ctx.wait(5)
        assert len(results) == 50


def test_set_attrs_online_from_another_thread():
    ctx = small_ctx(seed=None)
    seen = []
    ctx.add_callback(
        "after_aggregation",
        lambda c: seen.append((c.attrs.sample_interval_us, c.snapshot().aggr_interval_us)),
    )
    ctx.start()
    try:
        ctx.call(lambda c: None)
        new = Attrs(
            sample_interval_us=2000, aggr_interval_us=40_000, min_nr_regions=3, max_nr_regions=50
        )
        ctx.set_attrs(new)
        # set_attrs() returned once the loop applied it
        assert ctx.attrs == new.with_aggr_samples()
        assert ctx.call(lambda c: c.attrs.aggr_samples) == 20
        n = ctx.call(lambda c: c.nr_aggregations)
        while ctx.call(lambda c: c.nr_aggregations) < n + 2:
            time.sleep(0.001)
    finally:
        ctx.stop()
    assert ctx.wait(5)
    assert seen[-1] == (2000, 40_000)
    assert ctx.nr_regions <= 50


def test_loop_errors_reach_wait():
    ops = PatternOps()

    def boom(c):
        if c.passed_sample_intervals == 3:
            raise RuntimeError("ops failed")

    ops.on_prepare = boom
    ctx = small_ctx(ops)
    ctx.start()
    with pytest.raises(RuntimeError, match="ops failed"):
        ctx.wait(5)
    assert not ctx.is_running


# -- reproducibility --
def _recorded_run(seed: int):
    ranges = [
        [(0, 512 * PAGE_SIZE)],
        [
            (1 << 30, (1 << 30) + 64 * PAGE_SIZE),
            ((1 << 30) + 80 * PAGE_SIZE, (1 << 30) + 300 * PAGE_SIZE),
        ],
    ]
    slices = [[0.0, 0.9, 0.1, 0.0, 1.0, 0.3, 0.0, 0.05], [0.5] * 4 + [0.0] * 4]
    ctx = Context(
        PatternOps(slice_pattern(ranges, slices)),
        [Target(ranges=r) for r in ranges],
        Attrs(
            sample_interval_us=1000, aggr_interval_us=20_000, min_nr_regions=10, max_nr_regions=200
        ),
        seed=seed,
    )
    out = []
    ctx.add_callback(
        "after_aggregation",
        lambda c: out.extend(
            (s.end_us, s.starts.tolist(), s.ends.tolist(), s.nr_accesses.tolist(), s.age.tolist())
            for s in c.snapshots()
        ),
    )
    ctx.run(nr_aggregations=15)
    return out


def test_same_seed_same_results():
    a, b = _recorded_run(1234), _recorded_run(1234)
    assert a == b
    assert a != _recorded_run(4321)


# -- watermarks deactivation (kdamond_wait_activation) --
class AlwaysDeactivated:
    """A schemes runner whose schemes are all deactivated by watermarks."""

    def __init__(self, wait_us: int) -> None:
        self.wait_us = wait_us
        self.applied = 0

    def init(self, ctx):
        pass

    def wmark_wait_us(self, ctx):
        return self.wait_us

    def apply(self, ctx):
        self.applied += 1

    def attrs_changed(self, ctx):
        pass


def test_deactivated_schemes_pause_monitoring_until_the_run_ends():
    ops = PatternOps(constant(0.5))
    ops.record = True
    ctx = small_ctx(ops)
    runner = AlwaysDeactivated(wait_us=300_000)
    ctx.schemes_runner, ctx.schemes = runner, [object()]
    checks = []
    ctx.add_callback("after_wmarks_check", lambda c: checks.append(c.clock.now_us()))
    ctx.run(duration_us=1_000_000)  # must end although no scheme ever activates
    assert ops.events == [] and runner.applied == 0  # no monitoring while deactivated
    assert checks == [300_000, 600_000, 900_000, 1_000_000]
    # after_wmarks_check stopping the loop ends it at once, like after_aggregation
    ctx = small_ctx(PatternOps())
    ctx.schemes_runner, ctx.schemes = AlwaysDeactivated(1000), [object()]
    ctx.add_callback("after_wmarks_check", stop_when(lambda c: c.clock.now_us() >= 5000))
    ctx.run()
    assert ctx.clock.now_us() == 5000


# -- snapshots --
def test_snapshot_in_after_aggregation_is_the_aggregation_just_ended():
    from pydamon.core import Snapshot

    ctx = small_ctx(PatternOps(constant(1.0)), sample_interval_us=1000, aggr_interval_us=10_000)
    snaps = []
    ctx.add_callback("after_aggregation", lambda c: snaps.append(c.snapshot(0)))
    ctx.run(nr_aggregations=3)
    for i, snap in enumerate(snaps):
        # every sample hit: all regions merged to full nr_accesses, before the reset
        assert snap.nr_accesses.tolist() == [10] * snap.nr_regions
        assert snap.access_rate.tolist() == [1.0] * snap.nr_regions
        assert (snap.start_us, snap.end_us) == (i * 10_000, (i + 1) * 10_000)
        assert snap.total_bytes == 256 * PAGE_SIZE
        again = Snapshot.from_dict(snap.to_dict())
        assert again.to_dict() == snap.to_dict()
    assert snaps[1].age.tolist() == [1] * snaps[1].nr_regions  # unchanged access: age grows
    # snapshots are copies: later aggregations do not change them
    assert snaps[0].nr_accesses.tolist() == [10] * snaps[0].nr_regions
