"""paddr actions through the frame -> process reverse map: reclaim (``--ops paddr``) pages out,
``lru_deprio`` deactivates.

Uses the ``workload`` and ``zram_swap`` fixtures of tests/guest/conftest.py. The module monitors
the guest's biggest System RAM range, as the kernel's DAMON_RECLAIM does; the workload process's
cold area must go to swap while its hot area stays resident and its data stays intact. A first
phase with ``skip_anon`` shows the ops filters still decide on this path: nothing anonymous may
be paged out then, although cold regions are tried.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from realmem import PAGE, active_share, frames, resident_and_swapped, touch_remotely, wait_for

from pydamon.core import Attrs, Context, Target
from pydamon.damos.scheme import AccessPattern, Action, Scheme
from pydamon.modules.reclaim import ReclaimModule
from pydamon.modules.runner import ModuleRunner
from pydamon.ops.paddr import PaddrOperations

pytestmark = pytest.mark.guest


# Intervals the emulated guest keeps up with (as in test_modules_guest.py).
MONITORING: dict[str, Any] = dict(
    sample_interval="100ms", aggr_interval="1s", min_nr_regions=10, max_nr_regions=40
)


def test_reclaim_on_physical_memory_pages_out_the_cold_area_only(zram_swap, workload) -> None:
    wl = workload("hotcold", "--tick-ms", "50", size="64M")
    cold, hot = wl.areas["cold"], wl.areas["hot"]
    cold_size, hot_size = cold[1] - cold[0], hot[1] - hot[0]
    assert resident_and_swapped(wl.pid, cold) == (cold_size, 0)
    module = ReclaimModule(
        ops="paddr",
        min_age="2s",
        # no quota: every cold region is tried each aggregation (free memory, which is most of
        # the guest's and never accessed, would otherwise take most of a size quota's turns)
        quota_sz=0,
        quota_ms=0,
        # always active: the guest's free memory is far above the default watermarks
        wmarks_high=1000,
        wmarks_mid=999,
        wmarks_low=0,
        wmarks_interval="1s",
        skip_anon=True,
        **MONITORING,
    )
    runner = ModuleRunner(module, cpu_budget=0)
    runner.start()
    try:
        # skip_anon: cold physical regions are tried (twice: the first pass only marks the
        # pages idle for the page-level young check), but no anonymous page may go
        assert wait_for(lambda: module.stats().get("bytes_reclaim_tried_regions", 0) > 0, 30)
        time.sleep(6)
        assert resident_and_swapped(wl.pid, cold)[1] == 0, module.stats()
        runner.set_params({"skip_anon": False})

        def cold_swapped() -> bool:
            return resident_and_swapped(wl.pid, cold)[1] >= 0.6 * cold_size

        # Counted in the monitor's aggregations, not wall seconds: on a loaded host the
        # emulated guest runs fewer aggregations a second (45 s once held too few of them).
        ctx = runner.contexts[0]
        first = ctx.nr_aggregations
        wait_for(lambda: cold_swapped() or ctx.nr_aggregations - first >= 45, 300)
        assert cold_swapped(), (
            module.stats(),
            resident_and_swapped(wl.pid, cold),
            ctx.nr_aggregations - first,
        )
        # the module's stats are copied at the end of an aggregation: they may lag one behind
        wait_for(lambda: module.stats()["bytes_reclaimed_regions"] >= 0.6 * cold_size, 5)
        stats = module.stats()
        ops = runner.contexts[0].ops
        hot_present, hot_swapped = resident_and_swapped(wl.pid, hot)
    finally:
        runner.close()
    assert stats["bytes_reclaimed_regions"] >= 0.6 * cold_size, stats
    # the reverse map was built (at start) and failures, if any, were counted, not raised
    assert getattr(ops, "nr_rmap_builds", 0) >= 1
    # the hot area is accessed every tick: the young re-check keeps it resident
    assert hot_present >= 0.9 * hot_size, (hot_present, hot_swapped, hot_size)
    check = wl.command("verify")
    assert check["ok"], check


def test_lru_deprio_on_physical_memory_deactivates_the_cold_area(workload) -> None:
    """MADV_COLD through the reverse map: the kernel's paddr lru_deprio (folio_deactivate)."""
    wl = workload("hotcold", "--tick-ms", "50", size="32M")
    cold = wl.areas["cold"]
    cold_size = cold[1] - cold[0]
    for _ in range(2):
        touch_remotely(wl.pid, *cold)
    assert active_share(wl.pid, cold) >= 0.9
    # monitor just the physical span of the cold area's frames (other frames may lie inside)
    pfns = frames(wl.pid, cold)
    span = (int(pfns.min()) * PAGE, (int(pfns.max()) + 1) * PAGE)
    scheme = Scheme(
        pattern=AccessPattern(min_sz_bytes=PAGE, max_nr_accesses=0, min_age=2),
        action=Action.LRU_DEPRIO,
    )
    attrs = Attrs(
        sample_interval_us=100_000, aggr_interval_us=1_000_000, min_nr_regions=3, max_nr_regions=10
    )
    ctx = Context(PaddrOperations(), [Target(ranges=[span])], attrs, schemes=[scheme], cpu_budget=0)
    ctx.start()
    try:
        deactivated = wait_for(lambda: active_share(wl.pid, cold) <= 0.1, 30)
    finally:
        ctx.stop()
        ctx.wait(10)
    assert deactivated, (scheme.stats, active_share(wl.pid, cold))
    assert scheme.stats.sz_applied >= 0.9 * cold_size, scheme.stats
    assert scheme.stats.sz_ops_filter_passed >= scheme.stats.sz_applied, scheme.stats
    # deactivated, not paged out
    assert resident_and_swapped(wl.pid, cold)[0] == cold_size
    check = wl.command("verify")
    assert check["ok"], check
