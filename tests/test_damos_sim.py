"""DAMOS on the simulated address space (``ops.sim``): policies evaluated against ground truth."""

from __future__ import annotations

from collections import Counter

from pydamon.core import Attrs, Context, Target
from pydamon.damos import (
    AccessPattern,
    Action,
    GoalMetric,
    NrAccessesUnit,
    Quota,
    QuotaGoal,
    Scheme,
    SchemesEngine,
    Watermarks,
    WmarkMetric,
    parse_scheme_line,
)
from pydamon.ops.sim import SimOperations

M = 1 << 20
ATTRS = Attrs(sample_interval_us=5000, aggr_interval_us=100_000)


def sim_ctx(schemes: list[Scheme], seed: int = 5) -> tuple[Context, SimOperations]:
    ops = SimOperations("hotcold", total_bytes=256 * M, seed=seed)
    ctx = Context(ops, [Target()], ATTRS, seed=seed)
    ctx.set_schemes(schemes)
    return ctx, ops


def test_schemes_given_to_the_context_constructor_are_applied():
    ops = SimOperations("hotcold", total_bytes=64 * M, seed=3)
    scheme = parse_scheme_line("4K max 0 0 1s max pageout")
    ctx = Context(ops, [Target()], ATTRS, seed=3, schemes=[scheme])
    assert isinstance(ctx.schemes_runner, SchemesEngine)
    ctx.run(duration_us=5_000_000)
    assert scheme.stats.sz_applied > 0


def overlap(ranges: list[tuple[int, int]], lo: int, hi: int) -> int:
    return sum(max(0, min(e, hi) - max(s, lo)) for s, e in ranges)


def test_pageout_with_size_quota_pages_out_only_cold_memory_within_quota():
    scheme = parse_scheme_line("4K max 0 0 2s max pageout 0 16M 1s 0 0 1 none 0 0 0 0")
    ctx, ops = sim_ctx([scheme])
    assert isinstance(ctx.schemes_runner, SchemesEngine)
    tried: list[tuple[int, int, int]] = []
    ctx.schemes_runner.add_walk_callback(
        lambda c, ti, r, s, passed: tried.append((s.quota_state.charged_from_us, r.start, r.end))
    )
    resident_before = ops.specs[0].mapped_bytes
    ctx.run(duration_us=15_000_000)

    areas = {name: (lo, hi) for name, lo, hi in ops.space(0).areas}
    ranges = [(s, e) for _, s, e in tried]
    assert overlap(ranges, *areas["cold"]) == sum(e - s for s, e in ranges) > 0
    for name in ("hot", "warm", "stack"):
        assert overlap(ranges, *areas[name]) == 0, name
    per_window = Counter()
    for window, s, e in tried:
        per_window[window] += e - s
    assert max(per_window.values()) <= 16 * M
    assert len(per_window) >= 10  # several windows, each bounded
    assert scheme.stats.qt_exceeds >= 5
    effects = ops.effects
    cold_size = areas["cold"][1] - areas["cold"][0]
    # most of the cold area is paged out, bounded by what the quota allowed
    assert 0.5 * cold_size <= effects.paged_out_bytes <= scheme.stats.sz_tried
    assert effects.resident_bytes <= resident_before - effects.paged_out_bytes + M
    assert effects.major_faults < 50  # the cold area is never touched again


def test_psi_goal_drives_the_effective_quota_up_and_down():
    # Paging out warm memory (accessed 20% of ticks) makes the workload fault it back: the
    # simulated PSI. The goal lets the quota grow while there is no pressure and cuts it back
    # when the stall time per window exceeds 2 ms.
    goal = QuotaGoal(GoalMetric.SOME_MEM_PSI_US, target_value=2000)
    scheme = Scheme(
        AccessPattern(max_nr_accesses=50, nr_accesses_unit=NrAccessesUnit.PERCENT),
        Action.PAGEOUT,
        quota=Quota(goals=[goal], reset_interval_ms=100),
    )
    ctx, ops = sim_ctx([scheme])
    samples: list[tuple[int, int]] = []
    ctx.add_callback(
        "after_aggregation", lambda c: samples.append((scheme.quota_state.esz, goal.current_value))
    )
    ctx.run(duration_us=10_000_000)
    esz = [e for e, _ in samples]
    rises = sum(1 for a, b in zip(esz, esz[1:]) if b > a)
    falls = [(a, b) for a, b in zip(esz, esz[1:]) if b < a]
    assert max(esz) >= 8 * M  # grew while there was no pressure
    assert rises >= 20 and falls  # and was cut back
    # every cut follows a window whose stall time exceeded the goal
    for (e0, _), (e1, stall) in zip(samples, samples[1:]):
        if e1 < e0:
            assert stall > goal.target_value
    assert ops.effects.fault_stall_us > 0


def test_watermarks_follow_the_simulated_free_memory():
    # The simulated machine has twice the mapped memory, so free memory starts at 50%. A pageout
    # scheme that may run only while free memory is at most 55% (high) pages out cold memory
    # until free memory crosses 55% and then turns itself off; a scheme that needs free memory
    # at most 30% never runs. With both off, monitoring pauses and only watermarks are checked.
    on = parse_scheme_line(
        "4K max 0 0 1s max pageout 0 4M 100ms 0 0 0 free_mem_rate 100ms 550 550 100"
    )
    off = parse_scheme_line("4K max 0 0 1s max stat 0 0 0 0 0 0 free_mem_rate 100ms 300 300 100")
    assert on.wmarks == Watermarks(WmarkMetric.FREE_MEM_RATE, 100_000, 550, 550, 100)
    ctx, ops = sim_ctx([on, off])
    checks: list[int] = []
    ctx.add_callback("after_wmarks_check", lambda c: checks.append(c.passed_sample_intervals))
    ctx.run(duration_us=8_000_000)
    assert on.stats.nr_tried > 0 and not on.wmarks_activated
    assert off.stats.nr_tried == 0 and not off.wmarks_activated
    free = ops.metrics.free_mem_rate_permil()
    assert 550 < free <= 600
    total = ops.memory_total_bytes
    assert 0.05 * total <= ops.effects.paged_out_bytes <= 0.05 * total + 12 * M
    # once both were off, the loop only checked watermarks: no more sampling
    assert len(checks) >= 10 and len(set(checks)) == 1
