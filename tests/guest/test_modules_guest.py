"""The ready modules on real memory (the workload program, vaddr and paddr, zram swap).

Uses the ``workload`` fixture of tests/guest/conftest.py.

Runs where page_idle works (the test guest); see docs/testing.md. Each test runs a module
through the API (``ModuleRunner``, in the test's process: a CLI start costs ~20 s of Python
start-up under emulation; the CLI is tested on the host) against a live workload process.
"""

from __future__ import annotations

import os
import struct
import time
from typing import Any

import pytest
from realmem import active_share, touch_remotely, wait_for

from pydamon.modules.lru_sort import LruSortModule
from pydamon.modules.reclaim import ReclaimModule
from pydamon.modules.runner import ModuleRunner
from pydamon.modules.stat import StatModule
from pydamon.modules.thp import ThpModule
from pydamon.ops.pagefacts import KPF_THP

pytestmark = pytest.mark.guest

PAGE = 4096
MiB = 1 << 20
HPAGE = 2 * MiB


def page_states(pid: int, start: int, end: int) -> dict[str, int]:
    """Bytes of [start, end) present, swapped, and in THPs (pagemap + kpageflags, as root)."""
    nr = (end - start) // PAGE
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(start // PAGE * 8)
        entries = struct.unpack(f"<{nr}Q", f.read(nr * 8))
    present = [e for e in entries if e >> 63 & 1]
    swapped = sum(1 for e in entries if e >> 62 & 1)
    thp_pages = 0
    with open("/proc/kpageflags", "rb") as kf:
        # one check per 2 MiB-aligned huge page candidate (its first page), counted as 512 pages
        first = (start + (2 * MiB - 1)) // (2 * MiB) * (2 * MiB)
        for addr in range(first, end - 2 * MiB + 1, 2 * MiB):
            entry = entries[(addr - start) // PAGE]
            if entry >> 63 & 1:
                kf.seek((entry & ((1 << 55) - 1)) * 8)
                if struct.unpack("<Q", kf.read(8))[0] >> KPF_THP & 1:
                    thp_pages += 512
    return {"present": len(present) * PAGE, "swapped": swapped * PAGE, "thp": thp_pages * PAGE}


def areas_range(wl: Any) -> tuple[int, int]:
    """The workload's cold, warm and hot areas (a fixed range: monitors only the workload)."""
    names = ("cold", "warm", "hot")
    return min(wl.areas[n][0] for n in names), max(wl.areas[n][1] for n in names)


# Intervals the emulated guest keeps up with (one sample costs ~ms per region there).
MONITORING: dict[str, Any] = dict(
    sample_interval="100ms", aggr_interval="1s", min_nr_regions=10, max_nr_regions=40
)


def watching(wl: Any) -> dict[str, Any]:
    """Module parameters that monitor the workload process's areas with :data:`MONITORING`."""
    start, end = areas_range(wl)
    return dict(
        ops="vaddr", pid=wl.pid, monitor_region_start=start, monitor_region_end=end, **MONITORING
    )


# reclaim on physical memory (--ops paddr): tests/guest/test_reclaim_paddr_guest.py


def test_reclaim_idle_above_high_watermark_then_pages_out_cold_area(zram_swap, workload) -> None:
    wl = workload("hotcold", "--tick-ms", "50", size="64M")
    cold, hot = wl.areas["cold"], wl.areas["hot"]
    assert page_states(wl.pid, *cold)["present"] >= 0.95 * (cold[1] - cold[0])
    quota = 8 * MiB
    module = ReclaimModule(
        **watching(wl),
        min_age="3s",
        quota_sz=quota,
        quota_ms=0,
        wmarks_interval="1s",
        # free memory (most of the guest's) is above 1%: deactivated
        wmarks_high=10,
        wmarks_mid=5,
        wmarks_low=0,
    )
    runner = ModuleRunner(module, cpu_budget=0)
    runner.start()
    try:
        assert wait_for(lambda: module.stats().get("active") is False, 30)
        time.sleep(5)
        stats = module.stats()
        assert stats["active"] is False and stats["bytes_reclaimed_regions"] == 0
        assert page_states(wl.pid, *cold)["swapped"] == 0
        # commit_inputs: watermarks that keep it active, applied inside the running loop
        runner.set_params({"wmarks_high": 1000, "wmarks_mid": 999})
        activated = time.monotonic()
        cold_size = cold[1] - cold[0]
        tried: list[int] = []  # bytes tried, sampled about once per 1 s quota window

        def cold_swapped() -> bool:
            tried.append(module.stats().get("bytes_reclaim_tried_regions", 0))
            return page_states(wl.pid, *cold)["swapped"] >= 0.4 * cold_size

        assert wait_for(cold_swapped, 60), (module.stats(), page_states(wl.pid, *cold))
        elapsed = time.monotonic() - activated
        stats = module.stats()
    finally:
        runner.close()
    # no faster than the size quota allows: at most one quota per 1 s window
    assert stats["bytes_reclaim_tried_regions"] <= quota * (elapsed + 2), (stats, elapsed)
    steps = [b - a for a, b in zip(tried, tried[1:])]
    assert max(steps, default=0) <= 2 * quota, steps  # samples ~1 s apart may straddle two windows
    hot_states = page_states(wl.pid, *hot)
    assert hot_states["present"] >= 0.9 * (hot[1] - hot[0]), hot_states
    check = wl.command("verify")
    assert check["ok"], check


@pytest.mark.changes_system  # makes a cgroup
def test_reclaim_of_a_cgroups_processes(zram_swap, workload) -> None:
    wl = workload("hotcold", "--tick-ms", "50", size="32M")
    cgroup = "/sys/fs/cgroup/pydamon-test-reclaim"
    os.makedirs(cgroup, exist_ok=True)
    with open(f"{cgroup}/cgroup.procs", "w") as f:
        f.write(str(wl.pid))
    start, end = areas_range(wl)
    module = ReclaimModule(
        ops="vaddr",
        cgroup=cgroup,
        monitor_region_start=start,
        monitor_region_end=end,
        min_age="2s",
        quota_sz="64M",
        wmarks_high=1000,
        wmarks_mid=999,
        wmarks_low=0,
        **MONITORING,
    )
    runner = ModuleRunner(module, cpu_budget=0)
    runner.start()
    try:
        assert [t.pid for t in runner.contexts[0].targets] == [wl.pid]
        cold = wl.areas["cold"]
        assert wait_for(
            lambda: page_states(wl.pid, *cold)["swapped"] >= 0.3 * (cold[1] - cold[0]), 40
        ), module.stats()
    finally:
        runner.close()
    assert wl.command("verify")["ok"]


def test_thp_collapses_hot_areas_only(workload) -> None:
    thp_mode = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    if "[never]" in thp_mode:
        pytest.skip("THP is disabled in this kernel ([never])")
    wl = workload("hotcold", "--tick-ms", "50", size="96M")
    hot, cold = wl.areas["hot"], wl.areas["cold"]
    assert page_states(wl.pid, *hot)["thp"] == 0  # THP madvise mode: small pages at start
    aligned_hot = (hot[1] // HPAGE - (hot[0] + HPAGE - 1) // HPAGE) * HPAGE
    module = ThpModule(
        **watching(wl),
        # hot: ~96% of 100 ms samples see an access; warm ~36%; cold none
        hot_thres_access_freq=500,
    )
    runner = ModuleRunner(module, cpu_budget=0)
    runner.start()
    try:
        ok = wait_for(lambda: page_states(wl.pid, *hot)["thp"] >= 0.5 * aligned_hot, 60)
        # stats are copied after each aggregation, before the schemes apply: one more
        wait_for(lambda: module.stats().get("bytes_collapsed_regions", 0) > 0, 15)
        stats = module.stats()
    finally:
        runner.close()
    assert ok, (stats, page_states(wl.pid, *hot))
    assert page_states(wl.pid, *cold)["thp"] == 0
    assert stats["bytes_collapsed_regions"] > 0
    assert wl.command("verify")["ok"]


def test_lru_sort_deactivates_cold_memory_and_leaves_hot_memory_active(workload) -> None:
    wl = workload("hotcold", "--tick-ms", "50", size="32M")
    hot, cold = wl.areas["hot"], wl.areas["cold"]
    # New anonymous pages start on the inactive list: activate both areas first, so that what
    # lru_sort's cold action (MADV_COLD: folio_deactivate) does is visible.
    for _ in range(2):
        touch_remotely(wl.pid, *hot)
        touch_remotely(wl.pid, *cold)
    before = {"hot": active_share(wl.pid, hot), "cold": active_share(wl.pid, cold)}
    assert min(before.values()) >= 0.9, before
    module = LruSortModule(
        **watching(wl),
        cold_min_age="3s",
        quota_ms=0,
        wmarks_interval="1s",
        # free memory is far above the default watermarks (200/150/50): keep it active
        wmarks_high=1000,
        wmarks_mid=999,
        wmarks_low=0,
    )
    runner = ModuleRunner(module, cpu_budget=0)
    runner.start()
    try:
        deactivated = wait_for(lambda: active_share(wl.pid, cold) <= 0.1, 45)
        # stats are copied after each aggregation, before the schemes apply: one more
        wait_for(
            lambda: (
                module.stats().get("bytes_lru_sorted_cold_regions", 0) >= 0.5 * (cold[1] - cold[0])
            ),
            15,
        )
        stats = module.stats()
    finally:
        runner.close()
    after = {"hot": active_share(wl.pid, hot), "cold": active_share(wl.pid, cold)}
    assert deactivated, (stats, after)
    # hot memory was found hot (willneed: it stays resident) and was not deactivated
    assert stats["bytes_lru_sorted_hot_regions"] > 0, stats
    assert stats["bytes_lru_sorted_cold_regions"] >= 0.5 * (cold[1] - cold[0]), stats
    assert after["hot"] >= 0.9, after
    assert page_states(wl.pid, *hot)["present"] >= 0.95 * (hot[1] - hot[0])
    assert wl.command("verify")["ok"]


def test_stat_puts_the_cold_bytes_at_high_idle_times(workload) -> None:
    wl = workload("hotcold", "--tick-ms", "50", size="32M")
    start, end = areas_range(wl)
    cold = wl.areas["cold"]
    module = StatModule(
        **watching(wl),
        autotune_intervals=False,
        refresh_interval_ms=0,
    )
    runner = ModuleRunner(module, cpu_budget=0)
    runner.start()
    try:
        assert wait_for(lambda: module.stats().get("nr_aggregations", 0) >= 15, 90)
        stats = module.stats()
    finally:
        runner.close()
    nr_aggregations = stats["nr_aggregations"]
    pct = stats["memory_idle_ms_percentiles"]
    cold_share = (cold[1] - cold[0]) / (end - start)  # ~63%: the idlest bytes
    assert cold_share > 0.55
    # the coldest half of the bytes has been idle for at least a third of the run
    assert pct[50] >= nr_aggregations * 1000 // 3, (nr_aggregations, pct)
    assert pct[100] >= pct[50]
    # the hot area (~10%) is accessed in every aggregation: idle time 0 or below (minus its age,
    # which sampling noise in nr_accesses keeps resetting); hot and warm (~37%) less idle than cold
    assert pct[5] <= 0, pct
    assert pct[30] < pct[50], pct
    assert stats["estimated_memory_bandwidth"] > 0


def test_stat_on_physical_memory() -> None:
    module = StatModule(ops="paddr", autotune_intervals=False, refresh_interval_ms=0, **MONITORING)
    runner = ModuleRunner(module, cpu_budget=0)
    runner.start()
    try:
        assert wait_for(lambda: module.stats().get("nr_aggregations", 0) >= 8, 60)
        stats = module.stats()
    finally:
        runner.close()
    monitored = stats["monitored_bytes"]
    # the guest's RAM is mostly free or page cache nobody reads: most bytes are idle
    pct = stats["memory_idle_ms_percentiles"]
    assert monitored >= 1 << 30
    assert pct[50] >= 3000, pct
    assert pct[100] >= pct[50] >= pct[0]
