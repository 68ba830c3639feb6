"""The kernel backend on the guest's real kernel DAMON: :class:`pydamon.kernel.KernelContext`
monitoring the workload program, with results from tracefs and from tried regions.

They write the guest kernel's DAMON sysfs, so they run only inside the test guest. The default
guest kernel is 6.12; ``PYDAMON_GUEST_KERNEL=.../bzImage-6.1`` runs them on 6.1, which has no
tried regions (6.2): there that path is refused in one line and tracefs does the work.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest
from realmem import (
    WorkloadProcess,
    fraction_at_most,
    read_sysfs,
    ticks_per_sample,
    weighted_access,
)

from pydamon.core import Attrs, Snapshot, Target
from pydamon.damos.scheme import AccessPattern, Action, Scheme
from pydamon.kernel import KdamondNotOwned, KernelContext, KernelFeatureMissing

pytestmark = [pytest.mark.guest, pytest.mark.changes_system]

ADMIN = "/sys/kernel/mm/damon/admin"
TRACEFS = "/sys/kernel/tracing"
#: Generous intervals: the guest is emulated (the kdamond is cheap; the workload is not).
ATTRS = Attrs(
    sample_interval_us=50_000,
    aggr_interval_us=1_000_000,
    ops_update_interval_us=1_000_000,
    min_nr_regions=10,
    max_nr_regions=100,
)


def release() -> tuple[int, int]:
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int(minor)


HAS_TRIED_REGIONS = release() >= (6, 2)


def nr_kdamonds() -> int:
    return int(read_sysfs(f"{ADMIN}/kdamonds/nr_kdamonds"))


def our_instances() -> list[str]:
    return [n for n in os.listdir(f"{TRACEFS}/instances") if n.startswith("pydamon-")]


@pytest.fixture(autouse=True)
def kernel_damon_left_clean() -> Iterator[None]:
    if nr_kdamonds():
        pytest.skip("the guest's kernel DAMON already has kdamonds")
    yield
    assert nr_kdamonds() == 0, "a kdamond was left behind"
    assert our_instances() == [], "a trace instance was left behind"


@pytest.fixture
def hotcold(workload) -> WorkloadProcess:
    return workload("hotcold", "--tick-ms", "10", size="64M")


def collect(ctx: KernelContext, nr: int) -> list[Snapshot]:
    return [snaps[0] for snaps in ctx.aggregations(nr_aggregations=nr)]


def judge_hot_and_cold(wl: WorkloadProcess, last: list[Snapshot], ticks: float) -> None:
    max_nr = ATTRS.max_nr_accesses
    hot_area, cold_area = wl.areas["hot"], wl.areas["cold"]
    hot = [weighted_access(s, *hot_area) for s in last]
    cold = [weighted_access(s, *cold_area) for s in last]
    if ticks < 0.5:
        pytest.skip(f"workload starved by the emulation: {ticks:.2f} ticks/sample")
    # "hot" is touched in a tick with probability 0.8 (as in test_real_vaddr.py)
    expected_hot = 1 - 0.2 ** min(ticks, 5)
    assert max(hot) >= 0.6 * expected_hot * max_nr, (hot, cold, ticks)
    # cold stays cold once regions settle: most of its bytes read ~0
    quiet = [fraction_at_most(s, *cold_area, 0.1 * max_nr) for s in last]
    assert max(quiet) >= 0.7, (quiet, hot, cold, ticks)
    assert np.mean(hot) > np.mean(cold) + 0.3 * max_nr, (hot, cold)


@pytest.mark.parametrize("results", ["tracefs", "tried_regions"])
def test_kernel_record_finds_hot_and_keeps_cold_near_zero(hotcold, results) -> None:
    ctx = KernelContext("vaddr", [Target(pid=hotcold.pid)], ATTRS, results=results)
    if results == "tried_regions" and not HAS_TRIED_REGIONS:
        with pytest.raises(KernelFeatureMissing) as err:
            ctx.run(nr_aggregations=1)
        assert "\n" not in str(err.value) and "tried regions (Linux 6.2+)" in str(err.value)
        return
    snaps: list[Snapshot] = []
    info: list[dict] = []
    nr, judged = 12, 3
    for aggregation in ctx.aggregations(nr_aggregations=nr):
        snaps.append(aggregation[0])
        if len(snaps) in (nr - judged, nr):
            info.append(hotcold.command("info"))
    assert ctx.results == results and ctx.meta["results"] == results
    assert len(snaps) == nr and ctx.dropped_aggregations == 0
    for s in snaps:
        assert s.target_id == hotcold.pid and s.aggr_interval_us == ATTRS.aggr_interval_us
        assert 1 <= s.nr_regions <= ATTRS.max_nr_regions
        assert np.all(s.starts[1:] >= s.ends[:-1])  # sorted, not overlapping
    # one aggregation interval apart, on the monotonic clock; tried regions are filled during
    # the apply interval after each request and read file by file, which in the emulated guest
    # can miss the next one: a snapshot every one to three aggregations there
    gaps = np.diff([s.end_us for s in snaps[1:]]) / ATTRS.aggr_interval_us
    assert 0.5 <= float(np.median(gaps)) <= (1.5 if results == "tracefs" else 3.5), gaps
    assert snaps[-1].end_us <= time.monotonic_ns() // 1000
    ticks = ticks_per_sample(info[0], info[1], ATTRS.sample_interval_us)
    judge_hot_and_cold(hotcold, snaps[-judged:], ticks)


def test_stat_scheme_stats_and_tried_regions_read_back(hotcold) -> None:
    # a stat scheme on the regions accessed at all: the hot area's
    scheme = Scheme(pattern=AccessPattern(min_nr_accesses=1), action=Action.STAT)
    ctx = KernelContext("vaddr", [Target(pid=hotcold.pid)], ATTRS, schemes=[scheme])
    stats = []
    tried: list = []
    refused = ""
    # tried regions are read once the regions have had time to separate the hot area (until
    # then a region straddling hot and cold reads its sampled cold page and is not tried)
    for _aggregation in ctx.aggregations(nr_aggregations=12):
        stats.append(replace(scheme.stats))
        if ctx.nr_aggregations == 10:
            if HAS_TRIED_REGIONS:
                tried = ctx.update_tried_regions()[0]
            else:
                with pytest.raises(KernelFeatureMissing) as err:
                    ctx.update_tried_regions()
                refused = str(err.value)
    tried_sz = [s.sz_tried for s in stats]
    assert tried_sz == sorted(tried_sz) and stats[-1].nr_tried > 0, stats
    hot_start, hot_end = hotcold.areas["hot"]
    # tried once an aggregation: by the end, the hot area several times over
    assert stats[-1].sz_tried >= 2 * (hot_end - hot_start), stats
    assert scheme.stats == stats[-1] or scheme.stats.sz_tried >= stats[-1].sz_tried
    if not HAS_TRIED_REGIONS:
        assert "\n" not in refused and "tried regions (Linux 6.2+)" in refused
        return
    assert tried and tried is not None and scheme.tried_regions == tried
    assert all(r.nr_accesses >= 1 and r.target_index == 0 for r in tried), tried
    covered = sum(max(0, min(r.end, hot_end) - max(r.start, hot_start)) for r in tried)
    assert covered >= 0.5 * (hot_end - hot_start), (covered, tried)


def test_set_attrs_online_keeps_the_results(hotcold) -> None:
    ctx = KernelContext("vaddr", [Target(pid=hotcold.pid)], ATTRS)
    faster = replace(ATTRS, sample_interval_us=25_000, aggr_interval_us=500_000)
    snaps: list[Snapshot] = []
    committed_at = 0
    for aggregation in ctx.aggregations(nr_aggregations=14):
        snaps.append(aggregation[0])
        if len(snaps) == 10:
            ctx.set_attrs(faster)
            committed_at = time.monotonic_ns() // 1000
    before = [s for s in snaps if s.end_us < committed_at]
    after = [s for s in snaps if s.end_us >= committed_at]
    assert len(before) >= 9 and len(after) >= 3, [s.end_us for s in snaps]
    assert all(s.aggr_interval_us == 1_000_000 for s in before)
    assert all(s.aggr_interval_us == 500_000 for s in after)
    gaps = np.diff([s.end_us for s in after]) / 500_000
    assert 0.5 <= float(np.median(gaps)) <= 2.5, gaps
    # the regions and their ages were kept: the oldest regions' age (in aggregations) goes on
    # from where it was (6.7+ rescales it to the new interval, older kernels keep the count);
    # a commit that rebuilt the regions would start every age at 0
    oldest = [int(s.age.max()) for s in snaps]
    assert oldest[len(before) - 1] >= 5, oldest
    assert min(oldest[len(before) + 1 :]) >= 0.8 * oldest[len(before) - 1], oldest
    assert after[1].nr_regions >= ATTRS.min_nr_regions // 2
    hot = [weighted_access(s, *hotcold.areas["hot"]) for s in after[1:]]
    assert max(hot) >= 0.2 * faster.max_nr_accesses, hot


def sysfs_files(top: str) -> dict[str, str]:
    files = {}
    for d, _dirs, names in os.walk(top):
        for name in names:
            path = os.path.join(d, name)
            try:
                files[path] = read_sysfs(path)
            except OSError as err:  # write-only or unreadable: its error is its content
                files[path] = f"<{err.errno}>"
    return files


def write(rel: str, value: object) -> None:
    with open(f"{ADMIN}/{rel}", "w") as f:
        f.write(str(value))


def test_a_kdamond_made_by_hand_is_left_exactly_as_it_was(hotcold) -> None:
    write("kdamonds/nr_kdamonds", 1)
    try:
        write("kdamonds/0/contexts/nr_contexts", 1)
        write("kdamonds/0/contexts/0/operations", "vaddr")
        write("kdamonds/0/contexts/0/targets/nr_targets", 1)
        write("kdamonds/0/contexts/0/targets/0/pid_target", hotcold.pid)
        write("kdamonds/0/state", "on")
        time.sleep(1)
        before = sysfs_files(f"{ADMIN}/kdamonds")
        instances = sorted(os.listdir(f"{TRACEFS}/instances"))
        for results in ("auto", "tracefs", "tried_regions"):
            ctx = KernelContext("vaddr", [Target(pid=hotcold.pid)], ATTRS, results=results)
            with pytest.raises(KdamondNotOwned) as err:
                ctx.run(nr_aggregations=2)
            assert "\n" not in str(err.value) and "did not create" in str(err.value)
        assert sysfs_files(f"{ADMIN}/kdamonds") == before
        assert sorted(os.listdir(f"{TRACEFS}/instances")) == instances
    finally:
        write("kdamonds/0/state", "off")
        write("kdamonds/nr_kdamonds", 0)


RUN_UNTIL_INTERRUPTED = """
import sys
from pydamon.core import Attrs, Target
from pydamon.kernel import KernelContext
attrs = Attrs(sample_interval_us=50_000, aggr_interval_us=500_000,
              ops_update_interval_us=1_000_000, min_nr_regions=10, max_nr_regions=100)
ctx = KernelContext("vaddr", [Target(pid=int(sys.argv[1]))], attrs)
ctx.add_callback("after_aggregation", lambda c: print("aggregated", flush=True))
ctx.run()
"""


def test_keyboard_interrupt_of_a_foreground_run_turns_its_kdamond_off(hotcold) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_UNTIL_INTERRUPTED, str(hotcold.pid)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "aggregated", proc.stderr
        assert nr_kdamonds() == 1 and len(our_instances()) == 1
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert "KeyboardInterrupt" in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
