"""reclaim on physical memory (``--ops paddr``): pageout through the frame -> process reverse map.

Uses the ``workload`` and ``zram_swap`` fixtures of tests/guest/conftest.py. The module monitors
the guest's biggest System RAM range, as the kernel's DAMON_RECLAIM does; the workload process's
cold area must go to swap while its hot area stays resident and its data stays intact. A first
phase with ``skip_anon`` shows the ops filters still decide on this path: nothing anonymous may
be paged out then, although cold regions are tried.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from pydamon.modules.reclaim import ReclaimModule
from pydamon.modules.runner import ModuleRunner

pytestmark = pytest.mark.guest

PAGE = 4096
MiB = 1 << 20

# Intervals the emulated guest keeps up with (as in test_modules_guest.py).
MONITORING: dict[str, Any] = dict(
    sample_interval="100ms", aggr_interval="1s", min_nr_regions=10, max_nr_regions=40
)


def resident_and_swapped(pid: int, area: tuple[int, int]) -> tuple[int, int]:
    """Bytes of the area present in memory and swapped out (pagemap bits 63 and 62)."""
    start, end = area
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(start // PAGE * 8)
        entries = np.frombuffer(f.read((end - start) // PAGE * 8), np.uint64)
    present = int(((entries >> np.uint64(63)) & np.uint64(1)).sum())
    swapped = int(((entries >> np.uint64(62)) & np.uint64(1)).sum())
    return present * PAGE, swapped * PAGE


def wait_for(cond: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(1.0)
    return False


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
    runner = ModuleRunner(module)
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

        assert wait_for(cold_swapped, 45), (module.stats(), resident_and_swapped(wl.pid, cold))
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
