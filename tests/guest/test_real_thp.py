"""Access checks and the young filter (fvaddr) on memory backed by transparent huge pages, in
the test guest.

The page_idle bitmap tracks a huge page by its head page only: a tail page's bit can be neither
set nor read (it always reads "not idle"). Sampling addresses land on tail pages 511 times in
512, so without the head-page mapping of the access check, cold huge pages would read as hot;
and the young filter, which checks every page, would find every huge page young.
"""

from __future__ import annotations

import ctypes
import mmap
import os

import numpy as np
import pytest
from realmem import WorkloadProcess, ticks_per_sample, weighted_access

from pydamon.core import Attrs, Context, Snapshot, Target
from pydamon.damos import Action, Filter, FilterType, Scheme
from pydamon.damos.filters import set_filters_default_reject
from pydamon.ops import pagefacts
from pydamon.ops.fvaddr import FvaddrOperations
from pydamon.ops.vaddr import filter_process_ranges

pytestmark = pytest.mark.guest

#: quick aggregations: the scheme is applied at each (the check of an idle area needs no wait)
ATTRS_IDLE = Attrs(sample_interval_us=50_000, aggr_interval_us=500_000, min_nr_regions=3)


def huge_page_share(pid: int, start: int, end: int) -> tuple[float, float]:
    """Of the pages at a 37-page stride in ``[start, end)``: the share in transparent huge
    pages, and the share that are tail pages (via pagemap and kpageflags)."""
    pagemap = pagefacts.Pagemap(pid)
    phys = pagefacts.PhysPages()
    try:
        addrs = np.arange(start, end, 4096 * 37, dtype=np.int64)
        flags = [phys.flags(p) for p in pagemap.pfns(addrs.tolist()) if p > 0]
    finally:
        pagemap.close()
        phys.close()
    if not flags:
        return 0.0, 0.0
    thp = sum(1 for f in flags if f >> pagefacts.KPF_THP & 1) / len(addrs)
    tails = sum(1 for f in flags if f >> pagefacts.KPF_COMPOUND_TAIL & 1) / len(addrs)
    return thp, tails


def test_access_check_on_huge_pages_hot_is_hot_and_cold_stays_cold(workload) -> None:
    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
        assert "[never]" not in f.read(), "the test guest's kernel has THP madvise mode"
    wl: WorkloadProcess = workload("hotcold", "--thp", "--tick-ms", "10", size="64M")
    hot_start, hot_end = wl.areas["hot"]
    cold_start, cold_end = wl.areas["cold"]
    # the areas are really huge-page backed, and sampling addresses land mostly on tail pages
    # (else this test would test nothing new)
    cold_thp, cold_tails = huge_page_share(wl.pid, cold_start, cold_end)
    hot_thp, _ = huge_page_share(wl.pid, hot_start, hot_end)
    assert cold_thp >= 0.5 and cold_tails >= 0.45, (cold_thp, cold_tails)
    assert hot_thp >= 0.25, hot_thp

    attrs = Attrs(
        sample_interval_us=100_000,
        aggr_interval_us=1_000_000,
        ops_update_interval_us=1_000_000,
        min_nr_regions=10,
        max_nr_regions=100,
    )
    # fvaddr on exactly the hot and the cold area: what is judged is the access check on huge
    # pages, not how fast adaptive regions find the areas' edges in a whole address space
    target = Target(pid=wl.pid, ranges=[(hot_start, hot_end), (cold_start, cold_end)])
    ctx = Context(FvaddrOperations(), [target], attrs, seed=7, cpu_budget=0)
    snaps: list[Snapshot] = []
    ctx.add_callback("after_aggregation", lambda c: snaps.append(c.snapshots()[0]))
    before = wl.command("info")
    ctx.run(nr_aggregations=6)
    after = wl.command("info")
    ticks = ticks_per_sample(before, after, attrs.sample_interval_us)
    if ticks < 0.5:
        pytest.skip(f"workload starved by the emulation: {ticks:.2f} ticks/sample")
    max_nr = attrs.max_nr_accesses
    last = snaps[-3:]
    hot = [weighted_access(s, hot_start, hot_end) for s in last]
    cold = [weighted_access(s, cold_start, cold_end) for s in last]
    # a hot page is touched in a tick with probability 0.8 (a huge page: nearly surely), so in
    # nearly every sample; cold huge pages are never touched after start-up
    expected_hot = 1 - 0.2 ** min(ticks, 5)
    assert min(hot) >= 0.7 * expected_hot * max_nr, (hot, cold, ticks)
    assert max(cold) <= 0.05 * max_nr, (hot, cold, ticks)
    # the huge pages survived monitoring (the check only reads and marks idle bits)
    assert huge_page_share(wl.pid, cold_start, cold_end)[0] == cold_thp


MiB = 1 << 20
HPAGE = 2 * MiB


def huge_page_areas(nr: int, size: int) -> tuple[mmap.mmap, list[tuple[int, int]], np.ndarray]:
    """``nr`` areas of ``size`` bytes in this process, each 2 MiB aligned, MADV_HUGEPAGE'd and
    written (so faulted in as huge pages): the mapping, the areas, and a byte view of it."""
    area = mmap.mmap(-1, nr * size + HPAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    view = np.frombuffer(area, np.uint8)
    base = int(view.ctypes.data)
    start = (base + HPAGE - 1) // HPAGE * HPAGE
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(nr * size), 14) == 0  # HUGEPAGE
    view[start - base : start - base + nr * size : 4096] = 1
    return (
        area,
        [(start + i * size, start + (i + 1) * size) for i in range(nr)],
        view[start - base :],
    )


def test_young_filter_on_huge_pages_sees_idle_ones_as_not_young() -> None:
    """A young filter on vaddr reads a huge page's young state from its head: an area left idle
    after its pages were marked idle reads not young, a touched one young (a tail frame's own
    idle bit always reads "not idle", so reading it made every huge page young)."""
    size = 2 * HPAGE
    mapping, (idle, busy), view = huge_page_areas(2, size)
    pid = os.getpid()
    for lo, hi in (idle, busy):
        thp, tails = huge_page_share(pid, lo, hi)
        assert thp == 1.0 and tails >= 0.9, (thp, tails)  # else this tests nothing
    allow_young = Scheme(action=Action.WILLNEED, filters=[Filter(FilterType.YOUNG, allow=True)])
    set_filters_default_reject(allow_young)
    # the first check finds every page young (just written) and marks them all idle
    _, passed = filter_process_ranges(pid, [idle, busy], allow_young)
    assert passed == 2 * size
    view[size : 2 * size : HPAGE] += 1  # one write per huge page of the busy area
    assert filter_process_ranges(pid, [idle], allow_young) == ([], 0)
    assert filter_process_ranges(pid, [busy], allow_young) == ([busy], size)

    # the same through a scheme applied by the monitoring of the idle area: nothing passes
    ctx = Context(
        FvaddrOperations(), [Target(pid=pid, ranges=[idle])], ATTRS_IDLE, seed=3, cpu_budget=0
    )
    ctx.set_schemes([allow_young])
    allow_young.stats.sz_ops_filter_passed = 0
    ctx.run(nr_aggregations=3)
    assert allow_young.stats.nr_tried >= 2
    assert allow_young.stats.sz_ops_filter_passed == 0, allow_young.stats
    del view  # on success only: a failed assert's traceback keeps the view alive
    mapping.close()
