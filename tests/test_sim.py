"""The simulated address space: specs, layout, sampling vs ground truth, DAMOS effects."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from pydamon.core import Attrs, Context, Snapshot, Target, VirtualClock
from pydamon.damos import Action, Scheme
from pydamon.ops.sim import (
    HUGE_PAGE_SIZE,
    WORKLOADS,
    Area,
    HotSpot,
    IntervalMap,
    Phase,
    SimOperations,
    WorkloadError,
    WorkloadSpec,
    get_workload,
    load_workload,
    spec_from_dict,
    vaddr_init_ranges,
)

PAGE = 4096
MiB = 1 << 20
GiB = 1 << 30


def small_spec(**kw) -> WorkloadSpec:
    """Two 1 MiB areas: "hot" accessed with p=0.5 per tick, "cold" never."""
    spec = WorkloadSpec(
        name="small",
        areas=[Area("hot", MiB, "heap"), Area("cold", MiB, "mmap")],
        phases=[Phase(10_000_000, {"hot": 0.5, "cold": 0.0})],
        **kw,
    )
    spec.validate()
    return spec


def started(ops: SimOperations, attrs: Attrs | None = None, seed: int = 3, **kw) -> Context:
    ctx = Context(ops, [Target(**kw)], attrs or Attrs(), seed=seed)
    ops.init(ctx)
    return ctx


# -- specs and layout ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_named_workloads_are_valid_and_scale(name):
    small = get_workload(name, 64 * MiB)
    big = get_workload(name, 64 * GiB)
    assert 0.9 * 64 * MiB <= small.mapped_bytes <= 1.1 * 64 * MiB
    assert 0.9 * 64 * GiB <= big.mapped_bytes <= 1.1 * 64 * GiB
    layout = big.layout()
    for (_, _, e1), (_, s2, _) in zip(layout, layout[1:]):
        assert e1 < s2  # gaps between areas
    assert all(s % PAGE == 0 and e % PAGE == 0 for _, s, e in layout)


def test_unknown_workload_names_the_choices():
    with pytest.raises(WorkloadError, match="hotcold"):
        get_workload("nope")


def test_layout_looks_like_a_process():
    spec = get_workload("hotcold")
    layout = {n: (s, e) for n, s, e in spec.layout()}
    assert layout["hot"][0] < 0x6000_0000_0000  # heap low
    assert 0x7E00_0000_0000 < layout["warm"][0] < layout["stack"][0]  # mmap below the stack


def test_spec_round_trips_through_dict_json_and_yaml(tmp_path):
    spec = get_workload("hotspot", 256 * MiB)
    data = spec.to_dict()
    assert spec_from_dict(data) == spec
    path = tmp_path / "w.json"
    path.write_text(json.dumps(data))
    assert load_workload(str(path)) == spec
    yaml = pytest.importorskip("yaml")
    ypath = tmp_path / "w.yaml"
    ypath.write_text(yaml.safe_dump(data))
    assert load_workload(str(ypath)) == spec


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["phases"][0]["access"].update(nope=0.5), "unknown area"),
        (lambda d: d["phases"][0]["access"].update(hot=1.5), "not in"),
        (lambda d: d["areas"][0].update(size_bytes=1000), "multiple of"),
        (lambda d: d.pop("phases"), "bad workload spec"),
        (lambda d: d["areas"][0].update(kind="weird"), "kind"),
    ],
)
def test_bad_specs_get_one_line_errors(mutate, message):
    data = small_spec().to_dict()
    mutate(data)
    with pytest.raises(WorkloadError, match=message) as err:
        spec_from_dict(data)
    assert "\n" not in str(err.value)


def test_bad_workload_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(WorkloadError, match="not valid JSON"):
        load_workload(str(bad))
    with pytest.raises(WorkloadError, match="cannot read"):
        load_workload(str(tmp_path / "missing.json"))


def test_vaddr_init_drops_the_two_biggest_gaps():
    areas = [(0, 10), (12, 20), (1000, 1010), (1011, 1020), (5000, 5010)]
    assert vaddr_init_ranges(areas) == [(0, 20), (1000, 1020), (5000, 5010)]


def test_init_regions_follow_the_kernel_vaddr_init():
    ops = SimOperations(get_workload("hotcold"))
    ctx = started(ops, Attrs(min_nr_regions=10))
    regions = ctx.targets[0].regions
    regions.check_invariants()
    spec_ranges = vaddr_init_ranges([(s, e) for _, s, e in ops.specs[0].layout()])
    # the regions cover exactly the three ranges
    covered = regions.ranges()
    assert covered[0][0] == spec_ranges[0][0] and covered[-1][1] == spec_ranges[-1][1]
    assert regions.total_size == sum(e - s for s, e in spec_ranges)
    assert len(regions) >= 8


def test_given_ranges_are_used_as_they_are():
    ops = SimOperations(small_spec())
    (_, s, e), _ = ops.specs[0].layout()
    ctx = started(ops, ranges=[(s, s + 64 * PAGE)])
    assert ctx.targets[0].regions.ranges() == [(s, s + 64 * PAGE)]


# -- sampling vs ground truth --------------------------------------------------------------------


def sample_once(ops: SimOperations, ctx: Context) -> tuple[int, int, np.ndarray]:
    t0 = ctx.clock.now_us()
    ops.prepare_access_checks(ctx)
    ctx.clock.sleep_until(t0 + ctx.attrs.sample_interval_us)
    addrs = ctx.targets[0].regions.sampling_addr.copy()
    before = ctx.targets[0].regions.nr_accesses.copy()
    ops.check_accesses(ctx)
    hits = ctx.targets[0].regions.nr_accesses - before
    return t0, ctx.clock.now_us(), np.column_stack([addrs, hits])


def test_each_sample_sees_exactly_the_ground_truth():
    ops = SimOperations(get_workload("hotcold", 64 * MiB))
    ctx = started(ops)
    seen_hits = 0
    for _ in range(30):
        t0, t1, rows = sample_once(ops, ctx)
        for addr, hit in rows.tolist():
            truth = ops.true_access_counts(addr, addr + 1, t0, t1)
            assert truth.tolist() == [hit]
            seen_hits += hit
    assert seen_hits > 0


def test_sampled_rate_matches_the_spec_probability():
    ops = SimOperations(small_spec())
    ctx = started(ops)
    space = ops.space()
    hot_lo, hot_hi = int(space.area_starts[0]), int(space.area_ends[0])
    counts = ops.true_access_counts(hot_lo, hot_hi, 0, 100_000)  # 20 ticks x 256 pages
    assert counts.mean() / 20 == pytest.approx(0.5, abs=0.03)
    cold = ops.true_access_counts(int(space.area_starts[1]), int(space.area_ends[1]), 0, 100_000)
    assert not cold.any()
    del ctx


def test_expected_rates_agree_with_exact_counts_for_a_moving_hotspot():
    spec = WorkloadSpec(
        name="spot",
        areas=[Area("data", 4 * MiB, "mmap")],
        phases=[
            Phase(
                60_000_000,
                {"data": 0.05},
                hotspots=[HotSpot("data", 512 * 1024, 0.9, period_us=2_000_000)],
            )
        ],
    )
    ops = SimOperations(spec, seed=5)
    started(ops)
    lo, hi = ops.space().areas[0][1], ops.space().areas[0][2]
    t0, t1 = 300_000, 1_300_000  # 200 ticks, the hot spot moves half the area
    exact = ops.true_access_counts(lo, hi, t0, t1) / 200
    rm = ops.expected_rates(lo, hi, t0, t1)
    page_starts = np.arange(lo, hi, PAGE, dtype=np.int64)
    expected = rm.rate_at(page_starts, page_starts + PAGE)
    # per-page noise of a 200-tick binomial is ~0.035; compare means over 32-page blocks
    blocks_exact = exact.reshape(-1, 32).mean(1)
    blocks_expected = expected.reshape(-1, 32).mean(1)
    assert np.abs(blocks_exact - blocks_expected).max() < 0.03
    assert expected.max() > 0.2 and expected.min() < 0.1  # the spot really moved


def test_phases_change_the_truth_at_their_boundary():
    ops = SimOperations(get_workload("phases", 64 * MiB, phase_us=1_000_000), seed=2)
    started(ops)
    space = ops.space()
    a = (int(space.area_starts[0]), int(space.area_ends[0]))
    before = ops.expected_rates(*a, 0, 1_000_000)
    after = ops.expected_rates(*a, 1_000_000, 2_000_000)
    assert before.rate.max() == pytest.approx(0.8) and after.rate.max() == 0.0
    again = ops.expected_rates(*a, 2_000_000, 3_000_000)  # phases repeat
    assert again.rate.max() == pytest.approx(0.8)


def test_accuracy_of_a_perfect_and_of_a_wrong_snapshot():
    ops = SimOperations(small_spec())
    started(ops)
    space = ops.space()
    hot = (int(space.area_starts[0]), int(space.area_ends[0]))
    cold = (int(space.area_starts[1]), int(space.area_ends[1]))

    def snap(nr_hot: int, nr_cold: int) -> Snapshot:
        return Snapshot(
            0, None, 0, 100_000, 5000, 100_000,
            np.array([hot[0], cold[0]]), np.array([hot[1], cold[1]]),
            np.array([nr_hot, nr_cold]), np.zeros(2, np.int64),
        )  # fmt: skip

    good = ops.accuracy(snap(10, 0))
    assert good.rate_error == pytest.approx(0.0, abs=1e-9)
    assert good.hot_precision == 1.0 and good.hot_recall == 1.0
    assert good.true_hot_bytes == MiB and good.measured_wss_bytes == MiB
    wrong = ops.accuracy(snap(0, 20))
    assert wrong.rate_error == pytest.approx(0.75)  # (0.5 * 1 MiB + 1.0 * 1 MiB) / 2 MiB
    assert wrong.hot_precision == 0.0 and wrong.hot_recall == 0.0
    truth = ops.truth_snapshot(snap(0, 0))
    assert truth.nr_accesses.tolist() == [10, 0]
    assert truth.starts.tolist() == [hot[0], cold[0]] and truth.ends.tolist() == [hot[1], cold[1]]


def test_same_seed_same_accesses_other_seed_different():
    def counts(seed: int) -> np.ndarray:
        ops = SimOperations(small_spec(), seed=seed)
        started(ops)
        s = ops.space()
        return ops.true_access_counts(int(s.area_starts[0]), int(s.area_ends[0]), 0, 50_000)

    assert np.array_equal(counts(1), counts(1))
    assert not np.array_equal(counts(1), counts(2))


def test_per_sample_work_does_not_depend_on_memory_size():
    """The access model is evaluated on one page per region, whatever the memory size."""
    sizes_seen = {}
    for total in (GiB, 64 * GiB):
        ops = SimOperations(get_workload("hotcold", total))
        ctx = Context(ops, [Target()], Attrs(min_nr_regions=10, max_nr_regions=100), seed=1)
        ctx.run(nr_aggregations=3)
        space = ops.space()
        calls: list[int] = []
        orig = space.access_prob

        def counting(addrs, tick, orig=orig, calls=calls):
            calls.append(len(addrs))
            return orig(addrs, tick)

        space.access_prob = counting  # type: ignore[method-assign]
        ctx.run(nr_aggregations=5)
        assert max(calls) <= max(ctx.attrs.max_nr_regions, ctx.nr_regions)
        sizes_seen[total] = len(calls)
    # the same number of evaluations, each over at most max_nr_regions pages
    assert sizes_seen[GiB] == sizes_seen[64 * GiB]


def test_target_becomes_invalid_at_the_workload_end():
    spec = small_spec(end_us=1_000_000)
    ops = SimOperations(spec)
    ctx = Context(ops, [Target()], Attrs(), seed=1)
    ctx.run(duration_us=10_000_000)
    assert 1_000_000 <= ctx.clock.now_us() <= 1_010_000
    assert not ctx.targets[0].valid


def test_default_clock_is_virtual():
    assert isinstance(SimOperations(small_spec()).default_clock(), VirtualClock)


# -- DAMOS effects -------------------------------------------------------------------------------


def scheme(action: str, **kw) -> Scheme:
    return Scheme(action=Action(action), **kw)


def run_for(ctx: Context, us: int) -> None:
    ctx.run(duration_us=us)


def test_pageout_of_cold_memory_frees_it_without_faults():
    ops = SimOperations(small_spec())
    ctx = started(ops)
    s = ops.space()
    cold = (int(s.area_starts[1]), int(s.area_ends[1]))
    free_before = ops.free_mem_rate_permil()
    res = ops.apply_scheme(ctx, ctx.targets[0], *cold, scheme("pageout"))
    assert res.sz_applied == MiB and res.sz_ops_filter_passed == MiB
    e = ops.effects
    assert e.paged_out_bytes == MiB and e.nonresident_bytes == MiB
    assert e.resident_bytes == MiB
    assert ops.free_mem_rate_permil() > free_before
    run_for(ctx, 2_000_000)
    assert ops.effects.major_faults == 0
    assert ops.effects.nonresident_bytes == MiB


def test_pageout_of_hot_memory_faults_it_back():
    ops = SimOperations(small_spec())
    ctx = started(ops)
    s = ops.space()
    hot = (int(s.area_starts[0]), int(s.area_ends[0]))
    ops.apply_scheme(ctx, ctx.targets[0], *hot, scheme("pageout"))
    assert ops.effects.nonresident_bytes == MiB
    run_for(ctx, 50_000)  # 10 ticks at p=0.5: all but ~0.1% are touched again
    e = ops.effects
    assert e.major_faults == pytest.approx(256, rel=0.01)
    assert e.nonresident_bytes < 0.01 * MiB
    assert e.fault_stall_us == pytest.approx(e.major_faults * ops.specs[0].major_fault_us)
    assert ops.metrics.some_mem_psi_total_us() == int(e.fault_stall_us)


def test_pageout_counts_only_resident_and_mapped_bytes():
    ops = SimOperations(small_spec())
    ctx = started(ops)
    s = ops.space()
    cold_lo = int(s.area_starts[1])
    # a range reaching into the unmapped gap before the area
    res = ops.apply_scheme(ctx, ctx.targets[0], cold_lo - 8 * PAGE, cold_lo + 8 * PAGE,
                           scheme("pageout"))  # fmt: skip
    assert res.sz_applied == 8 * PAGE and res.sz_ops_filter_passed == 8 * PAGE
    res = ops.apply_scheme(ctx, ctx.targets[0], cold_lo, cold_lo + 16 * PAGE, scheme("pageout"))
    assert res.sz_applied == 8 * PAGE  # the first half was already out
    assert ops.effects.paged_out_bytes == 16 * PAGE


def test_willneed_brings_paged_out_memory_back_without_faults():
    ops = SimOperations(small_spec())
    ctx = started(ops)
    s = ops.space()
    hot = (int(s.area_starts[0]), int(s.area_ends[0]))
    ops.apply_scheme(ctx, ctx.targets[0], *hot, scheme("pageout"))
    ops.apply_scheme(ctx, ctx.targets[0], *hot, scheme("willneed"))
    run_for(ctx, 100_000)
    assert ops.effects.major_faults == 0
    assert ops.effects.prefetched_bytes == MiB and ops.effects.nonresident_bytes == 0


def test_hugepage_backs_only_aligned_2mib_parts():
    spec = WorkloadSpec(
        name="thp",
        areas=[Area("data", 8 * MiB, "mmap", addr=0x7F00_0010_0000)],  # 1 MiB past 2 MiB
        phases=[Phase(1_000_000, {"data": 0.1})],
    )
    ops = SimOperations(spec)
    ctx = started(ops)
    lo, hi = 0x7F00_0010_0000, 0x7F00_0010_0000 + 8 * MiB
    res = ops.apply_scheme(ctx, ctx.targets[0], lo, hi, scheme("hugepage"))
    assert res.sz_applied == 6 * MiB  # [2M, 8M) aligned inside [1M, 9M)
    assert ops.effects.huge_backed_bytes == 6 * MiB
    assert ops.space().huge.starts[0] % HUGE_PAGE_SIZE == 0
    ops.apply_scheme(ctx, ctx.targets[0], lo, lo + 3 * MiB, scheme("nohugepage"))
    assert ops.effects.huge_backed_bytes == 4 * MiB
    ops.apply_scheme(ctx, ctx.targets[0], hi - 2 * MiB, hi, scheme("pageout"))
    assert ops.effects.huge_backed_bytes == 3 * MiB  # the paged-out part was split
    res = ops.apply_scheme(ctx, ctx.targets[0], lo, hi, scheme("collapse"))
    assert res.sz_applied == 6 * MiB
    assert ops.effects.huge_backed_bytes == 6 * MiB
    assert ops.effects.nonresident_bytes == MiB  # only the unaligned tail is still out


def test_lru_migrate_and_stat_actions():
    ops = SimOperations(small_spec())
    ctx = started(ops)
    s = ops.space()
    hot = (int(s.area_starts[0]), int(s.area_ends[0]))
    cold = (int(s.area_starts[1]), int(s.area_ends[1]))
    t = ctx.targets[0]
    assert ops.apply_scheme(ctx, t, *cold, scheme("lru_deprio")).sz_applied == MiB
    assert ops.apply_scheme(ctx, t, *hot, scheme("lru_prio")).sz_applied == MiB
    assert ops.effects.deprioritized_bytes == MiB and ops.effects.prioritized_bytes == MiB
    assert ops.metrics.lru_mem_bp(active=False) == 5000
    ops.apply_scheme(ctx, t, *cold, scheme("migrate_cold", target_nid=1))
    assert ops.effects.node_bytes == {0: MiB, 1: MiB}
    assert ops.apply_scheme(ctx, t, *hot, scheme("stat")).sz_applied == MiB
    assert ops.effects.applied_bytes["stat"] == MiB
    with pytest.raises(ValueError, match="does not know the action"):
        # not a kernel action, so no Scheme can carry it: a stand-in does
        ops.apply_scheme(ctx, t, *hot, SimpleNamespace(action="explode", target_nid=None))


def test_free_mem_rate_and_memory_total():
    spec = small_spec(memory_total_bytes=8 * MiB, other_used_bytes=2 * MiB)
    ops = SimOperations(spec)
    ctx = started(ops)
    assert ops.memory_total_bytes == 8 * MiB
    assert ops.free_mem_rate_permil() == 500  # (8 - 2 - 2) / 8
    assert ops.metrics.free_mem_rate_permil() == 500
    s = ops.space()
    ops.apply_scheme(ctx, ctx.targets[0], int(s.area_starts[1]), int(s.area_ends[1]),
                     scheme("pageout"))  # fmt: skip
    assert ops.free_mem_rate_permil() == 625
    assert ops.metrics.node_mem_bp(None, used=True) == 3750


def test_interval_map_assign_remove_and_coalesce():
    m = IntervalMap()
    m.assign(0, 100, 1.0)
    m.assign(100, 200, 1.0)
    assert m.starts.tolist() == [0] and m.ends.tolist() == [200]
    m.remove(50, 150)
    assert list(zip(m.starts.tolist(), m.ends.tolist())) == [(0, 50), (150, 200)]
    m.assign(40, 160, 0.5)
    assert list(zip(m.starts.tolist(), m.ends.tolist(), m.values.tolist())) == [
        (0, 40, 1.0),
        (40, 160, 0.5),
        (160, 200, 1.0),
    ]
    assert m.weighted_bytes() == pytest.approx(40 + 60 + 40)
    assert m.weighted_bytes(30, 50) == pytest.approx(10 + 5)


def test_long_sampling_windows_use_the_exact_any_access_probability():
    """Windows over MAX_EXACT_TICKS ticks draw "accessed at least once" from 1 - (1 - p)^n."""
    spec = WorkloadSpec(
        name="sparse",
        areas=[Area("data", 64 * MiB, "mmap")],
        phases=[Phase(1_000_000_000, {"data": 0.002})],
    )
    ops = SimOperations(spec, seed=4)
    started(ops)
    space = ops.space()
    addrs = np.arange(space.areas[0][1], space.areas[0][2], PAGE, dtype=np.int64)
    hit = space.accessed_in_window(addrs, 0, 1_000_000)  # 200 ticks
    assert hit.mean() == pytest.approx(1 - (1 - 0.002) ** 200, abs=0.01)
    short = space.accessed_in_window(addrs, 0, 100_000)  # 20 ticks: OR of the exact ticks
    exact = ops.true_access_counts(addrs[0], addrs[-1] + PAGE, 0, 100_000) > 0
    assert np.array_equal(short, exact)


def test_runs_with_intervals_auto_tuning():
    from pydamon.core import RECOMMENDED_INTERVALS_GOAL

    # rare accesses: the tuning grows the intervals, so windows span many ticks
    spec = WorkloadSpec(
        name="sparse",
        areas=[Area("data", 64 * MiB, "mmap")],
        phases=[Phase(1_000_000_000, {"data": 0.0005})],
    )
    ops = SimOperations(spec)
    ctx = Context(ops, [Target()], Attrs(intervals_goal=RECOMMENDED_INTERVALS_GOAL), seed=1)
    snaps: list[Snapshot] = []
    ctx.add_callback("after_aggregation", lambda c: snaps.append(c.snapshot()))
    ctx.run(duration_us=120_000_000)
    # the tuning moved it up past MAX_EXACT_TICKS ticks (the 4% goal is met near 90 ticks)
    assert ctx.attrs.sample_interval_us >= 400_000
    late = snaps[-1]
    true_rate = 1 - (1 - 0.0005) ** (late.sample_interval_us // 5000)
    measured = float((late.access_rate * late.sizes).sum() / late.total_bytes)
    assert measured == pytest.approx(true_rate, abs=0.02)


def test_one_workload_per_target():
    ops = SimOperations([small_spec(), get_workload("hotcold", 64 * MiB)], seed=1)
    ctx = Context(ops, [Target(), Target()], Attrs(), seed=1)
    ctx.run(nr_aggregations=3)
    assert ops.space(0).spec.name == "small" and ops.space(1).spec.name == "hotcold"
    assert ctx.targets[0].regions.total_size < ctx.targets[1].regions.total_size
    assert ops.truth_snapshot(ctx.snapshot(1)).target_index == 1


def test_access_checks_in_huge_pages_see_the_whole_2mib_page():
    """With THP, the Accessed bit is the PMD's: any of the 512 pages' accesses sets it."""
    spec = WorkloadSpec(
        name="thp",
        areas=[Area("data", 64 * MiB, "mmap", addr=0x7F00_0000_0000)],
        phases=[Phase(1_000_000_000, {"data": 0.002})],
    )
    ops = SimOperations(spec, seed=9)
    ctx = started(ops)
    space = ops.space()
    lo, hi = 0x7F00_0000_0000, 0x7F00_0000_0000 + 64 * MiB
    addrs = lo + np.random.default_rng(0).integers(0, 64 * MiB, 4000)
    windows = range(0, 1_000_000, 5000)  # 200 windows x 16 huge pages: sd of the mean ~0.01

    def hits() -> np.ndarray:
        return np.mean([space.accessed_in_window(addrs, t, t + 5000) for t in windows], 0)

    assert hits().mean() == pytest.approx(0.002, abs=0.002)
    ops.apply_scheme(ctx, ctx.targets[0], lo, lo + 32 * MiB, scheme("hugepage"))
    in_huge = addrs < lo + 32 * MiB
    h = hits()
    assert h[in_huge].mean() == pytest.approx(1 - (1 - 0.002) ** 512, abs=0.04)
    assert h[~in_huge].mean() == pytest.approx(0.002, abs=0.002)
    # every address of a huge page gets the same answer
    one = np.array([lo, lo + 4096, lo + HUGE_PAGE_SIZE - 4096])
    for t in windows:
        assert len(set(space.accessed_in_window(one, t, t + 5000).tolist())) == 1
    ops.apply_scheme(ctx, ctx.targets[0], lo, hi, scheme("nohugepage"))
    assert hits().mean() == pytest.approx(0.002, abs=0.002)


def test_the_registry_selects_the_sim_package_by_name():
    """``--ops sim`` and the modules find the operations set through the registry by name."""
    import pydamon.ops  # noqa: F401  (registers the operations sets)
    from pydamon.core.operations import operations_class, select_operations

    assert operations_class("sim") is SimOperations
    ops = select_operations("sim", workloads=small_spec(), seed=4)
    Context(ops, [Target()], Attrs(), seed=4).run(nr_aggregations=2)
    assert isinstance(ops, SimOperations) and ops.space().spec.name == "small"
