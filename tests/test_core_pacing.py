"""Honest sampling intervals and the CPU budget, on the real clock, with stand-in operations sets
whose access checks take real time: sleeping per region (a slow prepare/check) or burning a
fixed amount of CPU per region (a busy one).

The windows are measured by the stand-in itself (each region's write and read times), not by the
core's pacer, so the first test fails on a loop that sleeps the full interval after the prepare.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from pydamon.core import Attrs, Context, Operations, Target, update_regions_access
from pydamon.core.budget import CpuBudget, CpuBudgetError, as_budget
from pydamon.core.pacing import UNKNOWN
from pydamon.core.regions import Regions

MIB = 1 << 20


class SlowOps(Operations[object]):
    """Each region's prepare and check take ``per_region_s`` of wall time (a sleep) or of CPU
    time (``burn=True``: a spin on the thread's CPU clock, the same CPU however loaded the
    machine). Records every region's write and read time of every sample."""

    name = "slow-standin"

    def __init__(self, per_region_s: float, *, burn: bool = False) -> None:
        self.per_region_s = per_region_s
        self.burn = burn
        self.writes: list[float] = []
        self.windows: list[float] = []  # per region-sample: read time - write time (s)

    def init(self, ctx: Context) -> None:
        for t in ctx.targets:
            t.regions = Regions([(0, 64 * MIB)])
            t.regions.evenly_split(0, ctx.attrs.min_nr_regions, 4096)

    def _work(self, share: float = 0.5) -> None:
        # half before the region's write/read and half after: the stand-in's pages are
        # touched mid-way through their share of the walk, as a real walk's are on average
        seconds = self.per_region_s * share
        if self.burn:
            end = time.thread_time() + seconds
            while time.thread_time() < end:
                pass
        else:
            time.sleep(seconds)

    def prepare_access_checks(self, ctx: Context) -> None:
        self.writes = []
        for t in ctx.targets:
            for _ in range(len(t.regions)):
                self._work()
                self.writes.append(time.monotonic())  # the region's "idle-bit write"
                self._work()

    def check_accesses(self, ctx: Context) -> int:
        i = 0
        nr = 0
        for t in ctx.targets:
            for _ in range(len(t.regions)):
                self._work()
                if i < len(self.writes):
                    self.windows.append(time.monotonic() - self.writes[i])  # its "read"
                i += 1
                self._work()
            nr = max(nr, update_regions_access(ctx, t, np.zeros(len(t.regions), np.bool_)))
        return nr


def _fixed_regions(n: int, **kw: int) -> Attrs:
    # min == max: the number of regions (so the work per sample) stays put
    return Attrs(min_nr_regions=n, max_nr_regions=n, ops_update_interval_us=10**9, **kw)


def test_access_windows_are_the_sampling_interval_not_interval_plus_work():
    # 20 regions x 1 ms: ~20 ms of prepare and ~20 ms of check per 40 ms interval (room for
    # a slower machine before the work itself overruns); a loop sleeping the whole interval
    # after the prepare gives windows of ~60 ms
    ops = SlowOps(0.001)
    interval = 40_000
    ctx = Context(
        ops, [Target()], _fixed_regions(20, sample_interval_us=interval, aggr_interval_us=400_000)
    )
    ctx.run(nr_aggregations=2)
    mean_window_us = float(np.mean(ops.windows[20 * 3 :])) * 1e6  # after the first samples
    assert mean_window_us == pytest.approx(interval, rel=0.15), ops.windows[:5]


def test_snapshots_carry_the_real_sample_count_and_the_measured_window():
    ops = SlowOps(0.001)
    interval = 30_000
    ctx = Context(
        ops, [Target()], _fixed_regions(10, sample_interval_us=interval, aggr_interval_us=300_000)
    )
    seen = []
    warnings: list[str] = []
    ctx.on_warning = warnings.append
    for snaps in ctx.aggregations(nr_aggregations=3):
        seen.append(snaps[0])
    assert [s.nr_samples for s in seen] == [10, 10, 10]
    assert all(s.to_dict()["nr_samples"] == 10 for s in seen)
    # after the first aggregation (whose first sample has no check time to go by yet)
    truth_us = float(np.mean(ops.windows[100:])) * 1e6
    for s in seen[1:]:
        # (a loaded shared host delays single sleeps: 20% leaves room for that)
        assert s.mean_window_us == pytest.approx(truth_us, rel=0.2)
        assert s.mean_window_us == pytest.approx(interval, rel=0.2)
    assert warnings == []  # 10 ms of prepare and check fit in 30 ms


def test_work_beyond_the_interval_is_reported_once_in_one_line(capsys):
    # 10 regions x 2 ms: 40 ms of work per 10 ms interval
    ops = SlowOps(0.002)
    ctx = Context(
        ops, [Target()], _fixed_regions(10, sample_interval_us=10_000, aggr_interval_us=50_000)
    )
    ctx.run(nr_aggregations=4)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "sampling interval" in line]
    assert len(lines) == 1, err
    assert lines[0].startswith("pydamon: warning: ")
    assert "raise the sampling interval" in lines[0] and "CPU budget" in lines[0]
    assert ctx.pacer.warning is not None


def test_virtual_clock_sleeps_exactly_the_interval():
    from pydamon.ops.sim import SimOperations

    ctx = Context(SimOperations("hotcold"), [Target()], Attrs(), seed=3)
    assert ctx.budget is None  # the simulation has no budget by default
    snaps = next(ctx.aggregations(nr_aggregations=1))
    assert snaps[0].mean_window_us == Attrs().sample_interval_us
    assert snaps[0].nr_samples == Attrs().aggr_interval_us // Attrs().sample_interval_us
    assert snaps[0].end_us - snaps[0].start_us == Attrs().aggr_interval_us


def test_cpu_budget_keeps_the_process_cpu_near_it_by_stretching_the_interval():
    # 30 regions x 0.05 ms of CPU, twice per sample: 3 ms of CPU per 5 ms sample, ~40-60% of a
    # CPU unbounded; a 10% budget needs samples ~5x apart (within the 10x stretch limit: the
    # regions are fixed, so the budget has nothing else to lower)
    ops = SlowOps(0.00005, burn=True)
    asked = _fixed_regions(30, sample_interval_us=5_000, aggr_interval_us=50_000)
    ctx = Context(ops, [Target()], asked, cpu_budget=10)
    assert ctx.budget is not None
    marks: list[tuple[float, float]] = []
    ctx.add_callback(
        "after_aggregation",
        lambda c: marks.append((time.monotonic(), time.process_time())),
    )
    ctx.run(duration_us=9_000_000)
    # after settling (4 s), the process's CPU share until the end
    settled = next(m for m in marks if m[0] >= marks[0][0] + 4.0)
    share = (marks[-1][1] - settled[1]) / (marks[-1][0] - settled[0]) * 100
    assert share == pytest.approx(10, rel=0.2), (share, ctx.budget.summary(ctx.attrs))
    chosen = ctx.budget.summary(ctx.attrs)
    assert chosen["sample_interval_us"] == ctx.attrs.sample_interval_us > asked.sample_interval_us
    assert chosen["asked_sample_interval_us"] == asked.sample_interval_us
    # the aggregation keeps its number of samples
    assert ctx.attrs.aggr_interval_us // ctx.attrs.sample_interval_us == 10
    assert chosen["cpu_usage_percent"] == pytest.approx(10, rel=0.3)


def test_cpu_budget_past_its_stretch_limit_lowers_max_nr_regions():
    ops = SlowOps(0.0001, burn=True)
    asked = Attrs(
        sample_interval_us=5_000,
        aggr_interval_us=50_000,
        min_nr_regions=10,
        max_nr_regions=60,
        ops_update_interval_us=10**9,
    )
    ctx = Context(ops, [Target()], asked, cpu_budget=CpuBudget(10, max_stretch=2))
    ctx.run(duration_us=5_000_000)
    assert ctx.attrs.max_nr_regions < asked.max_nr_regions
    assert ctx.attrs.sample_interval_us >= 2 * asked.sample_interval_us
    # a budget change back to none restores what was asked
    ctx.set_cpu_budget(0)
    assert ctx.budget is None and ctx.attrs == asked.with_aggr_samples()


def test_real_memory_has_a_default_budget_and_zero_turns_it_off():
    import os

    from pydamon.core.budget import DEFAULT_REAL_CPU_BUDGET_PERCENT
    from pydamon.ops.vaddr import VaddrOperations

    ctx = Context(VaddrOperations(), [Target(pid=os.getpid())])
    assert ctx.budget is not None and ctx.budget.percent == DEFAULT_REAL_CPU_BUDGET_PERCENT
    assert Context(VaddrOperations(), [Target(pid=os.getpid())], cpu_budget=0).budget is None


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf")])
def test_bad_budgets_are_refused_in_one_line(bad):
    with pytest.raises(CpuBudgetError) as err:
        as_budget(bad)
    assert "\n" not in str(err.value)


def test_unknown_fields_of_old_snapshots():
    from pydamon.core.snapshot import Snapshot

    ctx = Context(SlowOps(0.0), [Target()], _fixed_regions(3))
    d = ctx.snapshot().to_dict()  # before any sample
    assert d["nr_samples"] == 0 and d["mean_window_us"] == UNKNOWN
    del d["nr_samples"], d["mean_window_us"]
    old = Snapshot.from_dict(d)
    assert old.nr_samples == UNKNOWN and old.mean_window_us == UNKNOWN
