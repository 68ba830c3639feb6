"""Per-block hotness history (pydamon.modules.blocks) and how the thp module uses it: only 2 MiB
blocks hot in K of the last M aggregations are collapsed, never the rest of a hot region."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pydamon.core import Context, Target
from pydamon.modules import ParamError
from pydamon.modules.blocks import BlockHistory
from pydamon.modules.runner import ModuleRunner
from pydamon.modules.thp import ThpModule
from pydamon.ops.sim import SimOperations
from pydamon.ops.sim.workloads import Area, Phase, WorkloadSpec

MiB = 1 << 20
B = 2 * MiB
BASE = 0x7F00_0000_0000 - 256 * MiB


def feed(h: BlockHistory, regions: list[tuple[int, int, bool]], target: int = 0) -> None:
    starts = np.array([r[0] for r in regions], np.int64)
    ends = np.array([r[1] for r in regions], np.int64)
    hot = np.array([r[2] for r in regions], bool)
    h.update(target, starts, ends, hot)


def test_block_is_hot_when_hot_regions_cover_more_than_half_of_it() -> None:
    h = BlockHistory(B, window=1, min_hot=1)
    # block 10: 1.5 MiB hot (two regions); block 11: exactly half; block 12: 0.25 MiB
    feed(
        h,
        [
            (10 * B, 10 * B + MiB, True),
            (10 * B + MiB, 10 * B + MiB + MiB // 2, True),
            (10 * B + MiB + MiB // 2, 11 * B + MiB, False),
            (11 * B + MiB, 12 * B + MiB // 4, True),
            (12 * B + MiB // 4, 13 * B, False),
        ],
    )
    assert h.persistent_blocks(0).tolist() == [10]
    # a region spanning several blocks covers each whole block it contains
    feed(h, [(20 * B + MiB, 24 * B, True)])
    assert h.persistent_blocks(0).tolist() == [21, 22, 23]
    assert h.persistent_ranges(0) == [(21 * B, 24 * B)]


def test_only_blocks_hot_in_k_of_the_last_m_aggregations_are_persistent() -> None:
    h = BlockHistory(B, window=5, min_hot=4)
    steady = (0, 4 * B, True)  # blocks 0-3 hot every time
    for i in range(10):
        # block 4 is hot every other aggregation (a straddling region that comes and goes)
        feed(h, [steady, (4 * B, 5 * B, i % 2 == 0), (5 * B, 6 * B, False)])
        if i < 3:
            assert not len(h.persistent_blocks(0)), i
        else:
            assert h.persistent_blocks(0).tolist() == [0, 1, 2, 3], i
    # cooling: hot in only 3 of the last 5 -> no longer persistent; 5 misses -> forgotten
    feed(h, [(0, 6 * B, False)])
    feed(h, [(0, 6 * B, False)])
    assert not len(h.persistent_blocks(0))
    for _ in range(3):
        feed(h, [(0, 6 * B, False)])
    assert h.nr_tracked_blocks() == 0
    # targets have histories of their own
    for _ in range(4):
        feed(h, [(0, B, True)], target=1)
    assert h.persistent_blocks(1).tolist() == [0] and not len(h.persistent_blocks(0))


def test_persistent_ranges_merge_adjacent_blocks_and_drop_short_runs() -> None:
    h = BlockHistory(B, window=1, min_hot=1)
    feed(h, [(0, 3 * B, True), (3 * B, 5 * B, False), (5 * B, 6 * B, True)])
    assert h.persistent_ranges(0) == [(0, 3 * B), (5 * B, 6 * B)]
    assert h.persistent_ranges(0, min_size=4 * MiB) == [(0, 3 * B)]
    # the rule changes online, the bits stay
    h.configure(window=3, min_hot=2, min_coverage_permil=500)
    assert not len(h.persistent_blocks(0))
    feed(h, [(0, B, True)])
    assert h.persistent_blocks(0).tolist() == [0]
    with pytest.raises(ValueError, match="min_hot"):
        h.configure(window=2, min_hot=3, min_coverage_permil=500)


def test_thp_params_rules() -> None:
    p = ThpModule(pid=1).p
    assert (p.hot_min_aggrs, p.hot_window_aggrs, p.hot_min_coverage) == (4, 5, 500)
    with pytest.raises(ParamError, match="hot_min_aggrs .6. must not exceed hot_window_aggrs"):
        ThpModule(pid=1, hot_min_aggrs=6)
    with pytest.raises(ParamError, match="hot_window_aggrs: 65 is above 64"):
        ThpModule(pid=1, hot_window_aggrs=65)


def straddle_spec() -> WorkloadSpec:
    # a dense hot area next to a never-accessed one: coarse early regions mix the two
    return WorkloadSpec(
        "straddle",
        [
            # adjacent, as two mmaps in a real process; heap and stack hold the two big gaps
            Area("cold", 58 * MiB, addr=BASE),
            Area("hot", 6 * MiB, addr=BASE + 58 * MiB),
            Area("heap", 4 * MiB, kind="heap"),
            Area("stack", MiB, kind="stack"),
        ],
        [Phase(10**12, {"hot": 0.9})],
        tick_us=50_000,
    )


def test_thp_collapses_persistently_hot_blocks_only_on_sim() -> None:
    module = ThpModule(
        ops="sim", sample_interval="100ms", aggr_interval="1s", hot_thres_access_freq=50
    )
    ops = SimOperations(straddle_spec(), seed=2)  # the old whole-region collapse failed here
    ctx = Context(ops, [Target()], module.make_attrs(), schemes=module.make_schemes(), seed=2)
    ctx.add_callback("after_aggregation", module.after_aggregation)
    collapsed_at: list[int] = []

    def watch(c: Context) -> None:
        if ops.effects.huge_backed_bytes and not collapsed_at:
            collapsed_at.append(c.nr_aggregations)

    ctx.add_callback("after_aggregation", watch)
    ctx.run(duration_us=30_000_000)
    space = ops.space(0)
    areas = {name: (start, end) for name, start, end in space.areas}

    def huge_in(lo: int, hi: int) -> int:
        h = space.huge
        return sum(
            max(0, min(e, hi) - max(s, lo)) for s, e in zip(h.starts.tolist(), h.ends.tolist())
        )

    hot, cold = areas["hot"], areas["cold"]
    aligned_hot = (hot[1] // B - (hot[0] + B - 1) // B) * B
    assert huge_in(*hot) >= aligned_hot - B, module.stats()
    assert huge_in(*cold) == 0
    # nothing before a block was hot in 4 aggregations (plus the one that applies)
    assert collapsed_at and collapsed_at[0] >= 4
    stats = module.stats()
    assert stats["bytes_collapsed_regions"] > 0
    assert 0 < stats["persistent_hot_bytes"] <= hot[1] - hot[0] + B


def test_thp_online_commit_keeps_the_history_and_gating() -> None:
    module = ThpModule(ops="sim", seed=2, hot_min_aggrs=2, hot_window_aggrs=3)
    runner = ModuleRunner(module)
    runner.start()
    try:
        ctx = runner.contexts[0]
        deadline = time.monotonic() + 60
        while ctx.nr_aggregations < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert module.history.nr_tracked_blocks() > 0
        runner.set_params({"hot_min_aggrs": 3, "hot_window_aggrs": 4})
        scheme = ctx.schemes[0]
        # the committed scheme is still gated by block filters (never left unfiltered)
        assert scheme.filters and scheme.filters[0].type == "target"
        assert module.history.window == 4 and module.history.min_hot == 3
    finally:
        runner.close()


def test_thp_gates_each_target_with_its_own_blocks_on_sim() -> None:
    class TwoProcesses(ThpModule):
        def make_targets(self) -> tuple[SimOperations, list[Target]]:
            return SimOperations(straddle_spec(), seed=5), [Target(), Target()]

    module = TwoProcesses(
        ops="sim", sample_interval="100ms", aggr_interval="1s", hot_thres_access_freq=50, seed=5
    )
    runner = ModuleRunner(module, duration_s=20)
    runner.start()
    assert runner.wait(120)
    runner.close()
    ctx = runner.contexts[0]
    collapse = ctx.schemes[:2]
    assert [s.action for s in ctx.schemes] == ["collapse", "collapse", "nohugepage"]
    for ti, scheme in enumerate(collapse):
        assert scheme.stats.nr_tried > 0
        assert {r.target_index for r in scheme.tried_regions} <= {ti}
        space = ctx.ops.space(ti)
        areas = {name: (start, end) for name, start, end in space.areas}
        hot, cold = areas["hot"], areas["cold"]
        huge = list(zip(space.huge.starts.tolist(), space.huge.ends.tolist()))
        assert sum(max(0, min(e, hot[1]) - max(s, hot[0])) for s, e in huge) >= 4 * MiB
        assert sum(max(0, min(e, cold[1]) - max(s, cold[0])) for s, e in huge) == 0
