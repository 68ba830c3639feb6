"""The DAMOS-based modules (reclaim, lru_sort, thp) on the simulated address space, and their
parameter rules. Real-memory behaviour is in tests/guest/test_modules_guest.py."""

from __future__ import annotations

import os
import time

import pytest

from pydamon.modules import ParamError, load_module
from pydamon.modules.lru_sort import LruSortModule
from pydamon.modules.reclaim import ReclaimModule
from pydamon.modules.runner import ModuleRunner
from pydamon.modules.thp import ThpModule

MiB = 1 << 20
ALWAYS_ACTIVE = dict(wmarks_high=1000, wmarks_mid=999, wmarks_low=0, wmarks_interval="1s")


def run(module, seconds: float) -> ModuleRunner:
    runner = ModuleRunner(module, duration_s=seconds)
    runner.start()
    assert runner.wait(120)
    runner.close()
    return runner


def test_reclaim_defaults_are_the_kernels() -> None:
    p = ReclaimModule().p
    assert (p.min_age, p.quota_ms, p.quota_sz, p.quota_reset_interval_ms) == (
        120_000_000,
        10,
        128 * MiB,
        1000,
    )
    assert (p.wmarks_interval, p.wmarks_high, p.wmarks_mid, p.wmarks_low) == (
        5_000_000,
        500,
        400,
        200,
    )
    assert (p.sample_interval, p.aggr_interval, p.min_nr_regions, p.max_nr_regions) == (
        5000,
        100_000,
        10,
        1000,
    )
    assert p.ops == "paddr" and p.skip_anon is False
    (scheme,) = ReclaimModule(min_age="10s", skip_anon=True).make_schemes()
    assert scheme.action == "pageout"
    assert (scheme.pattern.min_nr_accesses, scheme.pattern.max_nr_accesses) == (0, 0)
    assert scheme.pattern.min_age == 100  # 10 s in 100 ms aggregations
    assert scheme.quota.weight_age_permil and not scheme.quota.weight_nr_accesses_permil
    assert [(f.type, f.matching, f.allow) for f in scheme.filters] == [("anon", True, False)]
    goals = ReclaimModule(quota_mem_pressure_us=1000, quota_autotune_feedback=5000).make_schemes()
    assert [(g.metric, g.target_value) for g in goals[0].quota.goals] == [
        ("some_mem_psi_us", 1000),
        ("user_input", 10_000),
    ]


def test_reclaim_pages_out_cold_memory_within_quota_on_sim() -> None:
    module = ReclaimModule(
        ops="sim", seed=1, min_age="5s", quota_sz="64M", quota_ms=0, **ALWAYS_ACTIVE
    )
    runner = run(module, 12)
    effects = runner.contexts[0].ops.effects
    stats = module.stats()
    assert stats["active"]
    # nothing is older than min_age before 5 s; then at most 64 MiB per 1 s window
    assert 3 * 64 * MiB <= effects.paged_out_bytes <= 8 * 64 * MiB
    assert stats["bytes_reclaimed_regions"] == effects.paged_out_bytes
    assert stats["nr_quota_exceeds"] >= 3
    # only never-accessed memory went: no paged-out page was touched again
    assert effects.major_faults == 0


def test_reclaim_stays_idle_with_free_memory_above_high_watermark() -> None:
    module = ReclaimModule(
        ops="sim", seed=1, min_age="1s", wmarks_high=100, wmarks_mid=50, wmarks_low=0
    )
    runner = run(module, 20)
    assert runner.contexts[0].ops.effects.paged_out_bytes == 0
    stats = module.stats()
    assert stats["active"] is False and stats["nr_reclaim_tried_regions"] == 0


def test_reclaim_online_commit_keeps_stats() -> None:
    module = ReclaimModule(
        ops="sim", seed=1, min_age="2s", quota_sz="16M", quota_ms=0, **ALWAYS_ACTIVE
    )
    runner = ModuleRunner(module)
    runner.start()
    try:
        ctx = runner.contexts[0]
        deadline = time.monotonic() + 30
        while ctx.clock.now_us() < 6_000_000 and time.monotonic() < deadline:
            time.sleep(0.001)
        installed = ctx.schemes[0]
        before = ctx.call(lambda c: c.schemes[0].stats.sz_applied)  # read inside the loop
        assert before > 0
        runner.set_params({"quota_sz": "32M", "min_age": "3s"})
        # commit_inputs: the installed scheme is updated in place, its stats kept
        assert ctx.schemes[0] is installed
        assert installed.quota.sz == 32 * MiB and installed.pattern.min_age == 30
        assert installed.stats.sz_applied >= before
    finally:
        runner.close()
    assert installed.stats.sz_applied >= before


def test_lru_sort_on_sim_prioritizes_hot_and_deprioritizes_cold() -> None:
    module = LruSortModule(ops="sim", seed=1, cold_min_age="5s", **ALWAYS_ACTIVE)
    hot, cold = module.make_schemes()
    assert (hot.action, cold.action) == ("lru_prio", "lru_deprio")
    assert hot.pattern.min_nr_accesses == 10  # 500 permil of 20 samples
    assert hot.quota.ms == cold.quota.ms == 5  # half of quota_ms each
    runner = run(module, 15)
    effects = runner.contexts[0].ops.effects
    assert effects.prioritized_bytes > 64 * MiB
    assert effects.deprioritized_bytes > 64 * MiB
    stats = module.stats()
    assert stats["bytes_lru_sorted_hot_regions"] > 0 and stats["bytes_lru_sorted_cold_regions"] > 0


def test_lru_sort_and_thp_real_actions() -> None:
    hot, cold = LruSortModule(pid=1).make_schemes()
    assert (hot.action, cold.action) == ("willneed", "cold")
    (collapse,) = ThpModule(pid=1).make_schemes()
    # nothing is persistently hot before monitoring: the filters reject everything
    assert collapse.action == "collapse"
    assert [(f.type, f.matching, f.allow) for f in collapse.filters] == [
        ("target", False, False),
        ("target", True, False),
    ]
    assert len(ThpModule(pid=1, cold_action="pageout").make_schemes()) == 2


def test_thp_on_sim_backs_hot_memory_with_huge_pages() -> None:
    module = ThpModule(ops="sim", seed=1)
    runner = run(module, 10)
    effects = runner.contexts[0].ops.effects
    stats = module.stats()
    # hotcold: hot 10% + warm 25% (accessed above the 5% threshold) + stack, cold 60% not
    assert 250 * MiB <= effects.huge_backed_bytes <= 450 * MiB
    assert stats["hot_bytes"] > 250 * MiB


@pytest.mark.parametrize(
    "name, values, message",
    [
        ("lru_sort", {"ops": "paddr"}, "user space cannot sort physical pages"),
        ("thp", {"ops": "paddr"}, "thp works on virtual memory"),
        ("reclaim", {"wmarks_high": 100, "wmarks_mid": 200}, "wmarks_high >= wmarks_mid"),
        ("reclaim", {"quota_sz": "lots"}, "parameter quota_sz: 'lots' is not a size"),
        ("reclaim", {"sample_interval": "2s"}, "must not exceed aggregation interval"),
        ("reclaim", {"ops": "vaddr"}, "exactly one of --pid or --cgroup"),
    ],
)
def test_bad_params(name: str, values: dict, message: str) -> None:
    with pytest.raises(ParamError, match=message):
        load_module(name)(**values)


def test_cgroup_targets_are_its_processes() -> None:
    from pydamon.modules import ModuleError
    from pydamon.modules.targets import cgroup_pids

    v2 = [ln[3:] for ln in open("/proc/self/cgroup").read().splitlines() if ln.startswith("0::")]
    if not v2 or not os.path.exists(
        os.path.join("/sys/fs/cgroup", v2[0].lstrip("/"), "cgroup.procs")
    ):
        pytest.skip("no cgroup v2 hierarchy at /sys/fs/cgroup")
    path = v2[0]
    try:
        pids = cgroup_pids(path)
    except ModuleError as err:
        pytest.skip(f"cgroup not readable here: {err}")
    assert os.getpid() in pids
    with pytest.raises(ModuleError, match="does not exist"):
        cgroup_pids("/no/such/cgroup")


def test_reclaim_user_feedback_goal_tunes_the_quota_online() -> None:
    module = ReclaimModule(
        ops="sim", seed=1, min_age="1s", quota_ms=0, quota_sz=0, quota_autotune_feedback=2000,
        **ALWAYS_ACTIVE,
    )  # fmt: skip
    runner = ModuleRunner(module)
    runner.start()
    try:
        ctx = runner.contexts[0]
        deadline = time.monotonic() + 60

        def run_until(us: int) -> None:
            while ctx.clock.now_us() < us and time.monotonic() < deadline:
                time.sleep(0.001)

        # 20% of the user's goal achieved: the feedback loop grows the quota every window
        run_until(40_000_000)
        grown = ctx.schemes[0].quota_state.esz
        assert grown > 1 * MiB
        # goal over-achieved (2x): the quota falls back to the minimum
        runner.set_params({"quota_autotune_feedback": 20000})
        assert ctx.schemes[0].quota.goals[0].current_value == 20000
        run_until(ctx.clock.now_us() + 10_000_000)
        assert ctx.schemes[0].quota_state.esz < grown // 100
    finally:
        runner.close()


def test_seeded_simulated_module_runs_are_reproducible() -> None:
    # The module's seed must also seed the monitoring loop (sampling addresses, splits).
    def once() -> tuple[int, float, int]:
        module = ReclaimModule(
            ops="sim", seed=7, min_age="2s", quota_sz="32M", quota_ms=0, **ALWAYS_ACTIVE
        )
        runner = run(module, 6)
        effects = runner.contexts[0].ops.effects
        return effects.paged_out_bytes, effects.major_faults, runner.contexts[0].nr_regions

    first = once()
    assert first[0] > 0
    assert once() == first
