"""DAMOS schemes on real memory: pageout to zram swap, quotas, watermarks, THP collapse.

Runs where page_idle works (the test guest, see docs/testing.md), through the API in the test's
process against live ``python -m pydamon.workload`` processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pytest
from realmem import resident_and_swapped, wait_for

from pydamon.core import Attrs, Context, Target
from pydamon.damos import (
    AccessPattern,
    Action,
    Filter,
    FilterType,
    NrAccessesUnit,
    Quota,
    Scheme,
    SystemMetrics,
    Watermarks,
    WmarkMetric,
)
from pydamon.ops.vaddr import FvaddrOperations

pytestmark = pytest.mark.guest

MiB = 1 << 20
HPAGE = 2 * MiB
ATTRS = Attrs(sample_interval_us=20_000, aggr_interval_us=400_000, min_nr_regions=5)


def run_until(ctx: Context, cond: Any, timeout_s: float) -> bool:
    ctx.start()
    try:
        return wait_for(cond, timeout_s, poll_s=0.5)
    finally:
        ctx.stop()
        ctx.wait()


def test_pageout_cold_area_with_quota(workload, zram_swap):
    wl = workload("hotcold", "--tick-ms", "10", size="32M")
    areas = wl.areas
    cold, hot = areas["cold"], areas["hot"]
    cold_size = cold[1] - cold[0]
    quota_sz = 8 * MiB
    scheme = Scheme(
        AccessPattern(max_nr_accesses=0, min_age=4),  # unaccessed for 4 aggregations (1.6 s)
        Action.PAGEOUT,
        quota=Quota(sz=quota_sz, reset_interval_ms=1000),
    )
    ranges = sorted(areas[n] for n in ("cold", "warm", "hot"))
    ctx = Context(FvaddrOperations(), [Target(pid=wl.pid, ranges=ranges)], ATTRS, cpu_budget=0)
    ctx.set_schemes([scheme])
    applied: Counter[int] = Counter()
    assert ctx.schemes_runner is not None
    ctx.schemes_runner.add_walk_callback(  # type: ignore[attr-defined]
        lambda c, ti, r, s, passed: applied.update({s.quota_state.charged_from_us: r.size})
    )
    hot_before = resident_and_swapped(wl.pid, hot)[0]
    done = run_until(ctx, lambda: resident_and_swapped(wl.pid, cold)[0] <= 0.2 * cold_size, 120)
    cold_present, cold_swapped = resident_and_swapped(wl.pid, cold)
    assert done, f"cold area still {cold_present // 1024} KiB resident"
    assert cold_swapped >= 0.7 * cold_size
    # the hot area stayed in memory
    assert resident_and_swapped(wl.pid, hot)[0] >= 0.9 * hot_before
    # the quota bounded every window, and it took several windows
    assert applied and max(applied.values()) <= quota_sz
    assert len(applied) >= cold_size // quota_sz // 2
    assert scheme.stats.sz_applied >= 0.7 * cold_size
    assert wl.command("verify")["ok"]  # data intact after swap-out and back


def test_watermarks_switch_the_scheme_with_free_memory(workload):
    metrics = SystemMetrics()
    free0 = metrics.free_mem_rate_permil()
    assert free0 is not None and free0 > 300
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    # on while free memory is below (free0 - 150) per mille; off above free0 - 100. The margin
    # is wide because the page cache of a long guest test session keeps growing: with off at
    # free0 - 20, free memory did not come back above it after the balloon was freed (CI).
    wm = Watermarks(WmarkMetric.FREE_MEM_RATE, 200_000, high=free0 - 100, mid=free0 - 150, low=10)
    scheme = Scheme(action=Action.STAT, wmarks=wm)
    wl = workload("hotcold", "--tick-ms", "20", size="8M")
    ctx = Context(
        FvaddrOperations(), [Target(pid=wl.pid, ranges=[wl.areas["hot"]])], ATTRS, cpu_budget=0
    )
    ctx.set_schemes([scheme])
    states: list[tuple[float, bool, int]] = []
    ctx.add_callback(
        "after_wmarks_check",
        lambda c: states.append((time.monotonic(), scheme.wmarks_activated, 0)) and None,
    )
    balloon = None
    ctx.start()
    try:
        time.sleep(2)
        assert not scheme.wmarks_activated  # free memory above high: off, only wmark checks
        sis_while_off = ctx.passed_sample_intervals
        time.sleep(1)
        assert ctx.passed_sample_intervals == sis_while_off and states
        # take free memory below mid: a balloon of 20% of RAM
        balloon = Balloon(int(total * 0.20))
        deadline = time.monotonic() + 60
        while not scheme.wmarks_activated and time.monotonic() < deadline:
            time.sleep(0.5)
        assert scheme.wmarks_activated, f"free memory {metrics.free_mem_rate_permil()} permil"
        time.sleep(2)
        assert ctx.passed_sample_intervals > sis_while_off  # monitoring resumed
        assert scheme.stats.nr_tried > 0
        balloon.stop()  # free memory back above high: off again
        balloon = None
        deadline = time.monotonic() + 60
        while scheme.wmarks_activated and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not scheme.wmarks_activated
    finally:
        ctx.stop()
        ctx.wait()
        if balloon is not None:
            balloon.stop()


class Balloon:
    """A process holding ``size`` bytes of touched anonymous memory until stopped."""

    def __init__(self, size: int) -> None:
        code = "import sys; b = b'\\1' * int(sys.argv[1]); print('ok', flush=True); input()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(size)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ok"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.communicate()


def thp_bytes(pid: int, area: tuple[int, int]) -> int:
    """AnonHugePages of the VMAs overlapping ``area`` (from /proc/pid/smaps)."""
    total = 0
    inside = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo < area[1] and area[0] < hi
            elif inside and head == "AnonHugePages:":
                total += int(line.split()[1]) * 1024
    return total


def test_collapse_hot_area_into_huge_pages(workload):
    wl = workload("hotcold", "--tick-ms", "10", size="48M")
    hot = wl.areas["hot"]
    aligned = ((hot[0] + HPAGE - 1) // HPAGE * HPAGE, hot[1] // HPAGE * HPAGE)
    assert aligned[1] - aligned[0] >= HPAGE
    before = thp_bytes(wl.pid, hot)
    scheme = Scheme(
        AccessPattern(min_nr_accesses=10, nr_accesses_unit=NrAccessesUnit.PERCENT),
        Action.COLLAPSE,
        filters=[Filter(FilterType.ADDR, allow=True, addr_start=aligned[0], addr_end=aligned[1])],
    )
    ranges = sorted(wl.areas[n] for n in ("cold", "warm", "hot"))
    ctx = Context(FvaddrOperations(), [Target(pid=wl.pid, ranges=ranges)], ATTRS, cpu_budget=0)
    ctx.set_schemes([scheme])
    ok = run_until(ctx, lambda: thp_bytes(wl.pid, hot) >= HPAGE, 90)
    assert ok, f"AnonHugePages {thp_bytes(wl.pid, hot)} (before {before})"
    assert scheme.stats.sz_applied >= HPAGE
    # only the filtered hot range was tried
    assert all(aligned[0] <= r.start and r.end <= aligned[1] for r in scheme.tried_regions)
    assert wl.command("verify")["ok"]


def test_ops_filters_on_vaddr_spare_the_pages_they_reject(workload, zram_swap):
    wl = workload("hotcold", "--tick-ms", "10", size="16M")
    cold = wl.areas["cold"]
    # the workload's memory is private anonymous: a "reject anon" filter spares all of it
    scheme = Scheme(
        AccessPattern(max_nr_accesses=0, min_age=2),
        Action.PAGEOUT,
        filters=[Filter(FilterType.ANON, allow=False)],
    )
    ctx = Context(FvaddrOperations(), [Target(pid=wl.pid, ranges=[cold])], ATTRS, cpu_budget=0)
    ctx.set_schemes([scheme])
    assert run_until(ctx, lambda: scheme.stats.nr_tried >= 3, 60)
    st = scheme.stats
    assert st.sz_applied == 0 and st.sz_ops_filter_passed == 0
    assert resident_and_swapped(wl.pid, cold)[1] == 0  # nothing swapped out
    # allowing only anonymous pages lets the action through, and counts what passed
    allow = Scheme(
        AccessPattern(max_nr_accesses=0, min_age=2),
        Action.PAGEOUT,
        filters=[Filter(FilterType.ANON, allow=True)],
    )
    ctx = Context(FvaddrOperations(), [Target(pid=wl.pid, ranges=[cold])], ATTRS, cpu_budget=0)
    ctx.set_schemes([allow])
    assert run_until(ctx, lambda: allow.stats.sz_applied > 0, 60)
    assert allow.stats.sz_ops_filter_passed >= allow.stats.sz_applied > 0
    assert wl.command("verify")["ok"]
