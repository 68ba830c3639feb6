"""The kernel's DAMON core KUnit cases (mm/damon/tests/core-kunit.h, vaddr-kunit.h), re-expressed.

Inputs and expected values are the kernel's. KUnit builds DAMON with DAMON_MIN_REGION = 1, so
the structural operations are called with ``min_region_sz=1`` here.
"""

from __future__ import annotations

import numpy as np
import pytest

from pydamon.core import (
    BP,
    Attrs,
    AttrsError,
    Context,
    IntervalsGoal,
    Regions,
    Target,
    VirtualClock,
    feed_loop_next_input,
)
from pydamon.core.attrs import nr_accesses_to_accesses_bp
from pydamon.core.feedback import FEED_LOOP_MIN_INPUT
from pydamon.core.operations import Operations


def make_regions(ranges, **fields) -> Regions:
    regions = Regions(ranges)
    for name, values in fields.items():
        setattr(regions, name, np.asarray(values, dtype=np.int64))
    return regions


class IdleOps(Operations):
    """Operations set that never sees an access (enough for attrs / tuning cases)."""

    name = "idle"

    def default_clock(self):
        return VirtualClock()

    def prepare_access_checks(self, ctx):
        pass

    def check_accesses(self, ctx):
        return 0


# -- damon_test_aggregate --
def test_reset_aggregated_zeroes_nr_accesses_and_keeps_regions():
    saddr = [[10, 20, 30], [5, 42, 49], [13, 33, 55]]
    eaddr = [[15, 27, 40], [31, 45, 55], [23, 44, 66]]
    accesses = [[42, 95, 84], [10, 20, 30], [0, 1, 2]]
    targets = []
    for it in range(3):
        ranges = list(zip(saddr[it], eaddr[it]))
        targets.append(
            Target(
                ranges=ranges,
                regions=make_regions(
                    ranges,
                    nr_accesses=accesses[it],
                    nr_accesses_bp=[n * BP for n in accesses[it]],
                ),
            )
        )
    ctx = Context(IdleOps(), targets, min_region_sz=1)
    ctx._reset_aggregated()
    assert len(ctx.targets) == 3
    for it, t in enumerate(ctx.targets):
        assert len(t.regions) == 3
        assert t.regions.nr_accesses.tolist() == [0, 0, 0]
        assert t.regions.last_nr_accesses.tolist() == accesses[it]
        assert t.regions.ranges() == list(zip(saddr[it], eaddr[it]))


def test_reset_aggregated_resyncs_the_moving_sum():
    # damon_warn_fix_nr_accesses_corruption(): at reset nr_accesses_bp == nr_accesses * 10000.
    r = make_regions([(0, 100)], nr_accesses=[3], nr_accesses_bp=[30001])
    r.reset_aggregated()
    assert r.nr_accesses_bp.tolist() == [30000]
    assert r.last_nr_accesses.tolist() == [3]
    assert r.nr_accesses.tolist() == [0]


# -- damon_test_split_at --
def test_split_at():
    r = make_regions(
        [(0, 100)], nr_accesses_bp=[420000], nr_accesses=[42], last_nr_accesses=[15], age=[10]
    )
    r.split_at(0, 25)
    assert r.ranges() == [(0, 25), (25, 100)]
    for name in ("nr_accesses_bp", "nr_accesses", "last_nr_accesses", "age"):
        col = getattr(r, name).tolist()
        assert col[0] == col[1], name
    assert r.nr_accesses.tolist() == [42, 42]


@pytest.mark.parametrize("sz_left", [0, 100, 150, -5])
def test_split_at_rejects_empty_pieces(sz_left):
    r = Regions([(0, 100)])
    with pytest.raises(ValueError):
        r.split_at(0, sz_left)
    assert r.ranges() == [(0, 100)]


# -- damon_test_merge_two --
def test_merge_two():
    r = make_regions(
        [(0, 100), (100, 300)],
        nr_accesses=[10, 20],
        nr_accesses_bp=[100000, 200000],
        age=[9, 21],
    )
    r.merge_two(0)
    assert len(r) == 1
    assert r.ranges() == [(0, 300)]
    assert r.nr_accesses.tolist() == [16]
    assert r.nr_accesses_bp.tolist() == [160000]
    assert r.age.tolist() == [17]


# -- damon_test_merge_regions_of --
def test_merge_regions_of_threshold_and_size_limit():
    sa = [0, 100, 114, 122, 130, 156, 170, 184, 230]
    ea = [100, 112, 122, 130, 156, 170, 184, 230, 10170]
    nrs = [0, 0, 10, 10, 20, 30, 1, 2, 5]
    r = make_regions(list(zip(sa, ea)), nr_accesses=nrs, nr_accesses_bp=[n * BP for n in nrs])
    r.merge_regions(threshold=9, sz_limit=9999)
    assert r.ranges() == [(0, 112), (114, 130), (130, 156), (156, 170), (170, 230), (230, 10170)]
    r.check_invariants(min_region_sz=1)


def test_merge_regions_updates_age_by_threshold():
    # age resets when nr_accesses moved by more than the threshold since the last aggregation,
    # and grows by one otherwise (damon_merge_regions_of(), before merging).
    r = make_regions(
        [(0, 10), (20, 30), (40, 50)],
        nr_accesses=[10, 5, 0],
        last_nr_accesses=[0, 0, 0],
        age=[7, 7, 7],
    )
    r.merge_regions(threshold=5, sz_limit=1000)  # not adjacent: no merge
    assert r.age.tolist() == [0, 8, 8]


def test_merge_regions_weighted_average_of_updated_ages():
    r = make_regions(
        [(0, 100), (100, 400)], nr_accesses=[4, 4], last_nr_accesses=[4, 20], age=[3, 10]
    )
    r.merge_regions(threshold=2, sz_limit=1000)
    # ages become 4 and 0 first, then the size-weighted average: (4*100 + 0*300) / 400 = 1
    assert r.ranges() == [(0, 400)]
    assert r.age.tolist() == [1]
    assert r.last_nr_accesses.tolist() == [4]  # the left region's


def test_kdamond_merge_regions_doubles_threshold_while_over_max():
    # 8 adjacent regions with nr_accesses 0,10,0,10,...: threshold 0 merges nothing; with
    # max_nr_regions 4 the threshold doubles (1, 2, 4, 8, 16) until everything merges.
    ranges = [(i * 4096, (i + 1) * 4096) for i in range(8)]
    regions = make_regions(ranges, nr_accesses=[0, 10] * 4, last_nr_accesses=[0, 10] * 4)
    attrs = Attrs(
        sample_interval_us=1000, aggr_interval_us=20000, min_nr_regions=3, max_nr_regions=4
    )
    ctx = Context(IdleOps(), [Target(ranges=ranges, regions=regions)], attrs)
    ctx._merge_regions(threshold=0, sz_limit=8 * 4096)
    assert len(regions) <= 4
    regions.check_invariants()
    assert regions.total_size == 8 * 4096


# -- damon_test_split_regions_of --
def test_split_regions_of_count_bounds():
    rng = np.random.default_rng(1)
    for _ in range(50):
        r = Regions([(0, 22)])
        r.split_regions(2, rng, min_region_sz=1)
        assert len(r) <= 2
        r = Regions([(0, 220)])
        r.split_regions(4, rng, min_region_sz=1)
        assert len(r) <= 4
        r = Regions([(0, 220), (300, 400), (500, 700)])
        r.split_regions(4, rng, min_region_sz=5)
        assert len(r) <= 12
        assert all(s % 5 == 0 for s in r.start.tolist())
        assert all(e % 5 == 0 for e in r.end.tolist())
        r.check_invariants(min_region_sz=5)


def test_split_regions_of_pieces_inherit_results_and_skip_tiny_regions():
    rng = np.random.default_rng(3)
    r = make_regions(
        [(0, 2 * 4096), (8192, 8192 + 40 * 4096)],
        nr_accesses=[1, 7],
        nr_accesses_bp=[10000, 70000],
        last_nr_accesses=[2, 5],
        age=[4, 9],
    )
    r.split_regions(3, rng)
    # a region of two pages or less is never split
    assert r.ranges()[0] == (0, 2 * 4096)
    assert 2 <= len(r) <= 4
    assert r.nr_accesses.tolist()[1:] == [7] * (len(r) - 1)
    assert r.age.tolist()[1:] == [9] * (len(r) - 1)
    assert r.last_nr_accesses.tolist()[1:] == [5] * (len(r) - 1)
    assert r.total_size == 42 * 4096
    r.check_invariants()


def test_split_cut_points_are_10_to_90_percent():
    rng = np.random.default_rng(7)
    for _ in range(200):
        r = Regions([(0, 100 * 4096)])
        r.split_regions(2, rng)
        assert len(r) == 2
        left = int(r.sizes[0]) // 4096
        assert 10 <= left <= 90 and left % 10 == 0


# -- damon_test_set_regions (core-kunit.h) --
@pytest.mark.parametrize(
    "old, new, expect",
    [
        # initial build up on an empty target
        ([], [(5, 15), (15, 25)], [(5, 15), (15, 25)]),
        # un-intersecting regions are removed
        ([(4, 16), (24, 32)], [(18, 23)], [(18, 23)]),
        # holes are filled with new regions
        ([(4, 16), (24, 32)], [(8, 28)], [(8, 16), (16, 24), (24, 28)]),
        # new regions can be appended
        ([(0, 4), (4, 17)], [(0, 15), (25, 40)], [(0, 4), (4, 15), (25, 40)]),
        # new regions can be inserted
        ([(0, 4), (42, 52)], [(0, 15), (25, 40), (44, 50)], [(0, 15), (25, 40), (44, 50)]),
    ],
)
def test_set_regions(old, new, expect):
    r = Regions(old)
    r.set_regions(new, min_region_sz=1)
    assert r.ranges() == expect


# -- damon_test_apply_three_regions1..4 (vaddr-kunit.h) -------------------------------------------
OLD_THREE = [10, 20, 20, 30, 50, 55, 55, 57, 57, 59, 70, 80, 80, 90, 90, 100]


def _pairs(flat):
    return list(zip(flat[0::2], flat[1::2]))


@pytest.mark.parametrize(
    "new, expect",
    [
        ([(5, 27), (45, 55), (73, 104)], [5, 20, 20, 27, 45, 55, 73, 80, 80, 90, 90, 104]),
        ([(5, 27), (56, 57), (65, 104)], [5, 20, 20, 27, 56, 57, 65, 80, 80, 90, 90, 104]),
        ([(5, 27), (61, 63), (65, 104)], [5, 20, 20, 27, 61, 63, 65, 80, 80, 90, 90, 104]),
        ([(5, 7), (30, 32), (65, 68)], [5, 7, 30, 32, 65, 68]),
    ],
)
def test_apply_three_regions(new, expect):
    r = Regions(_pairs(OLD_THREE))
    r.set_regions(new, min_region_sz=1)
    assert r.ranges() == _pairs(expect)


def test_set_regions_keeps_results_of_surviving_regions_and_aligns():
    r = make_regions([(4096, 3 * 4096), (5 * 4096, 6 * 4096)], nr_accesses=[3, 4], age=[5, 6])
    r.set_regions([(4096 + 100, 6 * 4096 + 1)])
    # bounds aligned to pages (ALIGN_DOWN start, ALIGN end), hole filled by a fresh region
    assert r.ranges() == [(4096, 3 * 4096), (3 * 4096, 5 * 4096), (5 * 4096, 7 * 4096)]
    assert r.nr_accesses.tolist() == [3, 0, 4]
    assert r.age.tolist() == [5, 0, 6]
    r.check_invariants()


# -- damon_test_split_evenly (vaddr-kunit.h) --
@pytest.mark.parametrize("start, end, nr_pieces", [(0, 100, 10), (5, 59, 5), (4, 6, 1), (0, 3, 2)])
def test_evenly_split_succeeds(start, end, nr_pieces):
    r = Regions([(start, end)])
    r.evenly_split(0, nr_pieces, min_region_sz=1)
    assert len(r) == nr_pieces
    width = (end - start) // nr_pieces
    expect = [(start + i * width, start + (i + 1) * width) for i in range(nr_pieces)]
    expect[-1] = (expect[-1][0], end)  # the last piece absorbs the rounding remainder
    assert r.ranges() == expect


@pytest.mark.parametrize("start, end, nr_pieces", [(0, 100, 0), (5, 6, 2)])
def test_evenly_split_fails_and_leaves_the_region(start, end, nr_pieces):
    r = Regions([(start, end)])
    with pytest.raises(ValueError):
        r.evenly_split(0, nr_pieces, min_region_sz=1)
    assert r.ranges() == [(start, end)]


def test_evenly_split_page_aligned_keeps_first_piece_results():
    r = make_regions(
        [(0, 4096), (4096, 4096 + 11 * 4096), (12 * 4096, 13 * 4096)],
        nr_accesses=[1, 5, 2],
        age=[1, 3, 2],
    )
    r.evenly_split(1, 3)
    # 11 pages / 3 -> 3-page pieces, the last one 5 pages
    assert r.ranges() == [
        (0, 4096),
        (4096, 4 * 4096),
        (4 * 4096, 7 * 4096),
        (7 * 4096, 12 * 4096),
        (12 * 4096, 13 * 4096),
    ]
    # damon_va_evenly_split_region(): new pieces are new regions
    assert r.nr_accesses.tolist() == [1, 5, 0, 0, 2]
    assert r.age.tolist() == [1, 3, 0, 0, 2]
    r.check_invariants()


# -- damon_test_moving_sum / nr_accesses_bp --------------------------------------------------------
def test_moving_sum():
    # damon_moving_sum(mvsum=50000, nomvsum=50000, len_window=10, new_value) repeatedly; here the
    # last aggregation's count 5 gives nomvsum 5 * 10000.
    r = make_regions([(0, 4096)], nr_accesses_bp=[50000], last_nr_accesses=[5])
    new_values = [1, 0, 1, 0, 0, 0, 1, 0, 0, 0]
    expects = [55000, 50000, 55000, 50000, 45000, 40000, 45000, 40000, 35000, 30000]
    for accessed, expect in zip(new_values, expects):
        r.update_access_rate(np.array([bool(accessed)]), max_nr_accesses=10)
        assert r.nr_accesses_bp.tolist() == [expect]
    assert r.nr_accesses.tolist() == [3]


def test_nr_accesses_bp_equals_nr_accesses_at_window_end():
    rng = np.random.default_rng(5)
    r = Regions([(i * 4096, (i + 1) * 4096) for i in range(16)])
    window = 20
    for _ in range(6):
        for _ in range(window):
            r.update_access_rate(rng.random(16) < 0.4, max_nr_accesses=window)
        assert r.nr_accesses_bp.tolist() == (r.nr_accesses * BP).tolist()
        r.reset_aggregated()


def test_nr_accesses_to_accesses_bp_with_huge_aggregation():
    # damon_test_nr_accesses_to_accesses_bp: max_nr_accesses is capped to UINT_MAX.
    attrs = Attrs(sample_interval_us=10, aggr_interval_us=(2**32) * 10)
    assert attrs.max_nr_accesses == 2**32 - 1
    assert nr_accesses_to_accesses_bp(123, attrs) == 0


# -- damon_test_update_monitoring_result --
def _rescale(regions, old, new, aggregating):
    regions.update_monitoring_results(
        old.max_nr_accesses,
        new.max_nr_accesses,
        (old.aggr_interval_us, new.aggr_interval_us),
        aggregating,
    )


def test_update_monitoring_result_not_aggregating():
    old = Attrs(sample_interval_us=10, aggr_interval_us=1000)
    r = make_regions([(3, 7)], nr_accesses=[15], nr_accesses_bp=[150000], age=[20])
    _rescale(r, old, Attrs(sample_interval_us=100, aggr_interval_us=10000), False)
    assert (r.nr_accesses.tolist(), r.age.tolist()) == ([15], [2])
    _rescale(r, old, Attrs(sample_interval_us=1, aggr_interval_us=1000), False)
    assert (r.nr_accesses.tolist(), r.age.tolist()) == ([150], [2])
    _rescale(r, old, Attrs(sample_interval_us=1, aggr_interval_us=100), False)
    assert (r.nr_accesses.tolist(), r.age.tolist()) == ([150], [20])
    assert r.nr_accesses_bp.tolist() == [150 * BP]


def test_update_monitoring_result_aggregating_drops_partial_counts():
    old = Attrs(sample_interval_us=10, aggr_interval_us=1000)
    r = make_regions(
        [(3, 7)], nr_accesses=[7], nr_accesses_bp=[123456], last_nr_accesses=[15], age=[20]
    )
    _rescale(r, old, Attrs(sample_interval_us=1, aggr_interval_us=1000), True)
    assert r.nr_accesses.tolist() == [0]
    assert r.last_nr_accesses.tolist() == [150]
    assert r.nr_accesses_bp.tolist() == [150 * BP]
    assert r.age.tolist() == [20]


def test_set_attrs_rescales_through_the_context():
    old = Attrs(sample_interval_us=10, aggr_interval_us=1000, min_nr_regions=3)
    regions = make_regions([(0, 4096)], nr_accesses=[15], last_nr_accesses=[10], age=[20])
    ctx = Context(IdleOps(), [Target(regions=regions)], old)
    # not running, not in the middle of an aggregation: nr_accesses is converted
    ctx.set_attrs(Attrs(sample_interval_us=100, aggr_interval_us=20000, min_nr_regions=3))
    assert (regions.nr_accesses.tolist(), regions.age.tolist()) == ([30], [1])
    assert ctx.attrs.aggr_samples == 200
    # in the middle of an aggregation: partial counts dropped, last_nr_accesses converted
    ctx.passed_sample_intervals, ctx.next_aggregation_sis = 5, 10
    ctx.set_attrs(Attrs(sample_interval_us=100, aggr_interval_us=10000, min_nr_regions=3))
    assert regions.nr_accesses.tolist() == [0]
    assert regions.last_nr_accesses.tolist() == [5]
    assert regions.nr_accesses_bp.tolist() == [5 * BP]
    assert regions.age.tolist() == [2]
    assert ctx.next_aggregation_sis == 5 + 100


def test_set_attrs_with_a_zero_interval_forgives_conversion():
    old = Attrs(sample_interval_us=0, aggr_interval_us=1000, min_nr_regions=3)
    regions = make_regions([(0, 4096)], nr_accesses=[15], age=[20])
    ctx = Context(IdleOps(), [Target(regions=regions)], old)
    ctx.set_attrs(Attrs(sample_interval_us=10, aggr_interval_us=1000, min_nr_regions=3))
    assert (regions.nr_accesses.tolist(), regions.age.tolist()) == ([15], [20])


# -- damon_test_set_attrs --
VALID = Attrs(
    min_nr_regions=10, max_nr_regions=1000, sample_interval_us=5000, aggr_interval_us=100000
)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"min_nr_regions": 1}, "min_nr_regions must be at least 3"),
        ({"min_nr_regions": 2, "max_nr_regions": 2}, "at least 3"),
        ({"max_nr_regions": 9}, "must not exceed max_nr_regions"),
        ({"aggr_interval_us": 4999}, "must not exceed aggregation interval"),
        (
            {
                "intervals_goal": IntervalsGoal(
                    access_bp=400, aggrs=3, min_sample_us=10, max_sample_us=5
                )
            },
            "min_sample_us",
        ),
        (
            {
                "intervals_goal": IntervalsGoal(
                    access_bp=400, aggrs=3, min_sample_us=6000, max_sample_us=10000
                )
            },
            "inside the intervals goal range",
        ),
        (
            {
                "intervals_goal": IntervalsGoal(
                    access_bp=400, aggrs=3, min_sample_us=100, max_sample_us=4999
                )
            },
            "inside the intervals goal range",
        ),
    ],
)
def test_attrs_validation_errors(changes, words):
    from dataclasses import replace

    VALID.validate()
    bad = replace(VALID, **changes)
    with pytest.raises(AttrsError) as info:
        bad.validate()
    message = str(info.value)
    assert words in message and "\n" not in message
    with pytest.raises(AttrsError):
        Context(IdleOps(), [], bad)
    ctx = Context(IdleOps(), [], VALID)
    with pytest.raises(AttrsError):
        ctx.set_attrs(bad)
    assert ctx.attrs == VALID.with_aggr_samples()


def test_attrs_goal_off_ignores_goal_range():
    from dataclasses import replace

    replace(
        VALID,
        intervals_goal=IntervalsGoal(access_bp=400, aggrs=0, min_sample_us=9, max_sample_us=1),
    ).validate()
    Attrs(sample_interval_us=5000, aggr_interval_us=5000).validate()  # sample == aggr is fine


# -- damon_test_feed_loop_next_input --
def test_feed_loop_next_input_direction():
    last = 900000
    assert feed_loop_next_input(last, 200) > last
    assert feed_loop_next_input(last, 250000000) < last
    assert feed_loop_next_input(last, 200) > feed_loop_next_input(last, 2000)


@pytest.mark.parametrize(
    "last, score, expect",
    [
        (100_000_000, 10000, 100_000_000),  # goal met: keep
        (100_000_000, 0, 200_000_000),  # nothing achieved: double
        (100_000_000, 5000, 150_000_000),
        (100_000_000, 15000, 50_000_000),
        (100_000_000, 19999, FEED_LOOP_MIN_INPUT),  # 1e8 * 0.0001 = 10000 exactly
        (100_000_000, 20000, FEED_LOOP_MIN_INPUT),  # twice the goal or more: minimum at once
        (12345, 18000, FEED_LOOP_MIN_INPUT),  # never below the minimum input
        (2**64 - 1, 0, 2**64 - 1),  # saturates at ULONG_MAX
    ],
)
def test_feed_loop_next_input_values(last, score, expect):
    assert feed_loop_next_input(last, score) == expect


# -- kdamond_tune_intervals --
GOAL = IntervalsGoal(access_bp=400, aggrs=3, min_sample_us=1000, max_sample_us=100_000)


def _tuning_ctx(nr_accesses: int, sample_us: int = 10_000) -> tuple[Context, Regions]:
    attrs = Attrs(
        sample_interval_us=sample_us,
        aggr_interval_us=sample_us * 20,
        min_nr_regions=3,
        intervals_goal=GOAL,
    )
    regions = make_regions([(0, 4096), (4096, 3 * 4096)], nr_accesses=[nr_accesses] * 2)
    return Context(IdleOps(), [Target(regions=regions)], attrs), regions


def test_intervals_score_and_adaptation():
    ctx, _ = _tuning_ctx(0)
    assert ctx.intervals_score_bp() == 0
    assert ctx.intervals_adaptation_bp() == 20000  # too few accesses: double
    ctx, _ = _tuning_ctx(20)
    # every sample accessed: events 245760, target 245760 * 400 // 10000 = 9830 (integer
    # arithmetic as the kernel's), so the score is 245760 * 10000 // 9830, about 25x the goal
    assert ctx.intervals_score_bp() == 250010
    assert ctx.intervals_adaptation_bp() == 5000  # shrink, but at most to half
    ctx, regions = _tuning_ctx(0)
    # the 2-page region accessed once: 8192 of the 9830 targeted events
    regions.nr_accesses = np.array([0, 1], np.int64)
    assert ctx.intervals_score_bp() == 8333
    assert ctx.intervals_adaptation_bp() == 10000 + 1667


@pytest.mark.parametrize(
    "nr_accesses, sample_us, expect_sample_us",
    [
        (0, 10_000, 20_000),  # too few accesses: sample interval grows
        (0, 80_000, 100_000),  # ... clamped to max_sample_us
        (20, 10_000, 5_000),  # too many: shrinks by at most half
        (20, 1_500, 1_000),  # ... clamped to min_sample_us
    ],
)
def test_tune_intervals_direction_clamp_and_ratio(nr_accesses, sample_us, expect_sample_us):
    ctx, _ = _tuning_ctx(nr_accesses, sample_us)
    ctx._tune_intervals()
    assert ctx.attrs.sample_interval_us == expect_sample_us
    assert ctx.attrs.aggr_interval_us == expect_sample_us * 20  # aggr/sample ratio preserved
    assert ctx.attrs.aggr_samples == 20
