"""What pydamon runs on top of a kernel DAMON that lacks it (pydamon.kernel.emulate), on fake
kernels laid out like 6.1, 6.12 and 7.1 (tests/kernel_tree.py) with a fake tracefs under
tmp_path. Never the host's /sys/kernel/mm/damon.

The guest test (tests/guest/test_kernel_cli.py) tunes the intervals on the real 6.12.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel_tree import LINUX_6_1, LINUX_6_12, LINUX_7_1, FakeKernel, fake_kernel
from pydamon.core import Attrs, Target
from pydamon.core.attrs import IntervalsGoal
from pydamon.damos.scheme import (
    ULONG_MAX,
    Action,
    Filter,
    FilterType,
    GoalMetric,
    GoalTuner,
    Quota,
    QuotaGoal,
    Scheme,
)
from pydamon.kernel import KernelContext, KernelFeatureMissing
from pydamon.kernel.emulate import reject_only
from pydamon.kernel.feature_table import features_table
from tracefs_tree import FakeTracefs, aggregation_lines, fake_tracefs

REPO = Path(__file__).resolve().parent.parent
PID = 4242  # the fake kernel's first kdamond pid
GOAL = IntervalsGoal(access_bp=400, aggrs=1, min_sample_us=5_000, max_sample_us=1_000_000)
ATTRS = Attrs(
    sample_interval_us=10_000,
    aggr_interval_us=200_000,
    ops_update_interval_us=1_000_000,
    min_nr_regions=10,
    max_nr_regions=100,
)
CTX = "kdamonds/0/contexts/0"


def cold_regions() -> list[list[tuple[int, int, int, int]]]:
    """One target's regions, never accessed: the intervals goal asks for longer sampling."""
    start = 0x10000000
    return [[(start + i * 0x100000, start + (i + 1) * 0x100000, 0, 3) for i in range(4)]]


def setup(tmp_path: Path, layout: object) -> tuple[FakeKernel, FakeTracefs]:
    kernel = fake_kernel(tmp_path, layout)  # type: ignore[arg-type]
    tracefs = fake_tracefs(tmp_path)
    return kernel, tracefs


def context(
    kernel: FakeKernel, tracefs: FakeTracefs, attrs: Attrs = ATTRS, **kw: object
) -> KernelContext:
    return KernelContext(
        "vaddr",
        [Target(pid=os.getpid())],
        attrs,
        root=str(kernel.root),
        io=kernel,
        tracefs=str(tracefs.root),
        tracefs_io=tracefs,
        poll_s=0.01,
        **kw,  # type: ignore[arg-type]
    )


def feed(tracefs: FakeTracefs, nr: int) -> None:
    """``nr`` aggregations traced after now (on the instance's monotonic clock)."""
    now = time.monotonic()
    for a in range(nr):
        tracefs.emit(aggregation_lines(PID, now + 1 + a, cold_regions()))


def read(kernel: FakeKernel, rel: str) -> str:
    return (kernel.root / rel).read_text().strip()


# -- intervals auto-tuning ------------------------------------------------------------------------


def test_intervals_tuning_is_emulated_on_6_12_and_committed(tmp_path: Path) -> None:
    kernel, tracefs = setup(tmp_path, LINUX_6_12)
    ctx = context(kernel, tracefs, replace(ATTRS, intervals_goal=GOAL))
    seen: list[tuple[int, str]] = []

    def after(c: KernelContext) -> None:
        seen.append(
            (
                c.attrs.sample_interval_us,
                read(kernel, f"{CTX}/monitoring_attrs/intervals/sample_us"),
            )
        )
        if c.nr_aggregations == 1:
            feed(tracefs, 3)

    tracefs.pending = aggregation_lines(PID, 1.0, cold_regions())
    ctx.add_callback("after_aggregation", after)
    ctx.run(nr_aggregations=4)
    assert ctx.emulation.intervals and ctx.meta["emulated"] == [
        "intervals auto-tuning (native since 6.15)"
    ]
    assert ctx.emulator is not None and ctx.emulator.last_intervals_score_bp == 0
    # no access at all: each step scales the sampling up (the core's arithmetic), committed
    samples = [s for s, _ in seen]
    assert samples[0] > ATTRS.sample_interval_us
    assert samples == sorted(samples) and samples[-1] <= GOAL.max_sample_us
    assert [int(k) for _, k in seen] == samples  # what the kernel was given
    assert (0, "commit") in kernel.commands
    # the aggregation keeps its number of samples
    assert ctx.attrs.aggr_interval_us == ctx.attrs.sample_interval_us * 20
    assert not (kernel.root / f"{CTX}/monitoring_attrs/intervals/intervals_goal").exists()


def test_intervals_tuning_is_the_kernels_own_on_7_1(tmp_path: Path) -> None:
    kernel, tracefs = setup(tmp_path, LINUX_7_1)
    ctx = context(kernel, tracefs, replace(ATTRS, intervals_goal=GOAL))
    written = []
    goal_dir = f"{CTX}/monitoring_attrs/intervals/intervals_goal"
    ctx.add_callback(
        "after_aggregation", lambda c: written.append(read(kernel, f"{goal_dir}/aggrs"))
    )
    tracefs.pending = aggregation_lines(PID, 1.0, cold_regions())
    ctx.run(nr_aggregations=1)
    assert not ctx.emulation.any and ctx.meta["emulated"] == []
    assert written == ["1"] and ctx.attrs.sample_interval_us == ATTRS.sample_interval_us


# -- quota goals ----------------------------------------------------------------------------------


def goal_scheme(current: int, tuner: GoalTuner = GoalTuner.CONSIST) -> Scheme:
    goal = QuotaGoal(metric=GoalMetric.USER_INPUT, target_value=10_000, current_value=current)
    return Scheme(
        action=Action.PAGEOUT,
        quota=Quota(sz=0, reset_interval_ms=0, goals=[goal], goal_tuner=tuner),
    )


@pytest.mark.parametrize("layout", [LINUX_6_1, LINUX_6_12])
def test_quota_goals_the_kernel_lacks_are_tuned_and_committed_as_the_size_quota(
    tmp_path: Path, layout: object
) -> None:
    kernel, tracefs = setup(tmp_path, layout)
    # 6.1 has no quota goals; 6.12 has them but not the goal tuner
    scheme = goal_scheme(2_000, GoalTuner.CONSIST if layout is LINUX_6_1 else GoalTuner.TEMPORAL)
    ctx = context(kernel, tracefs, schemes=[scheme])
    sizes: list[int] = []

    def after(c: KernelContext) -> None:
        sizes.append(int(read(kernel, f"{CTX}/schemes/0/quotas/bytes")))
        if c.nr_aggregations == 1:
            feed(tracefs, 9)
        if c.nr_aggregations == 6:
            scheme.quota.goals[0].current_value = 15_000  # the goal is over-met by half

    tracefs.pending = aggregation_lines(PID, 1.0, cold_regions())
    ctx.add_callback("after_aggregation", after)
    ctx.run(nr_aggregations=10)
    assert ctx.emulation.goal_schemes == (0,)
    assert not (kernel.root / f"{CTX}/schemes/0/quotas/goals/0").exists()
    assert len(sizes) == 10
    growing, shrinking = sizes[:6], sizes[6:]
    if layout is LINUX_6_1:  # consist: under the goal the quota grows, over it it shrinks
        assert growing == sorted(set(growing)) and growing[-1] > 10 * growing[0]
        assert shrinking == sorted(set(shrinking), reverse=True) and shrinking[0] < growing[-1]
    else:  # temporal: the whole quota (none: size 0) until the goal is met, then nothing
        assert growing == [0] * 6 and shrinking == [1] * 4
    assert (0, "commit") in kernel.commands


def test_quota_goals_the_kernel_has_are_its_own(tmp_path: Path) -> None:
    kernel, tracefs = setup(tmp_path, LINUX_6_12)
    ctx = context(kernel, tracefs, schemes=[goal_scheme(2_000)])
    tracefs.pending = aggregation_lines(PID, 1.0, cold_regions())
    goal = f"{CTX}/schemes/0/quotas/goals/0/target_value"
    seen = []
    ctx.add_callback("after_aggregation", lambda c: seen.append(read(kernel, goal)))
    ctx.run(nr_aggregations=1)
    assert not ctx.emulation.any and seen == ["10000"]


# -- allow filters --------------------------------------------------------------------------------


def passes(filters: list[Filter], addr: int, target: int) -> bool:
    """The kernel's filters on one address: the first match decides; with none, the opposite
    of the last filter's allow (none at all: the action applies)."""
    for f in filters:
        if f.type == FilterType.ADDR:
            hit = f.addr_start <= addr < f.addr_end
        else:
            hit = f.target_idx == target
        if hit == f.matching:
            return f.allow
    return not filters[-1].allow if filters else True


addr_filter = st.builds(
    lambda s, n, allow, matching: Filter(
        type=FilterType.ADDR, addr_start=s, addr_end=s + n, allow=allow, matching=matching
    ),
    st.integers(0, 100),
    st.integers(1, 40),
    st.booleans(),
    st.booleans(),
)
target_filter = st.builds(
    lambda t, allow, matching: Filter(
        type=FilterType.TARGET, target_idx=t, allow=allow, matching=matching
    ),
    st.integers(0, 3),
    st.booleans(),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(addr_filter, target_filter), max_size=5))
def test_reject_only_rewrites_pass_the_same_memory(filters: list[Filter]) -> None:
    rewritten = reject_only(filters, nr_targets=4)
    if rewritten is None:
        # only what has no reject-only form is refused: a reject after an allow, or allows of
        # different kinds
        first = next(i for i, f in enumerate(filters) if f.allow)
        tail = filters[first:]
        assert (
            any(not f.allow for f in tail)
            or len({f.type for f in tail}) > 1
            or (len({f.matching for f in tail}) > 1)
        )
        return
    assert not any(f.allow for f in rewritten)
    for addr in range(0, 150, 3):
        for target in range(4):
            assert passes(rewritten, addr, target) == passes(filters, addr, target)


def test_allow_filters_on_6_12_are_written_as_reject_filters(tmp_path: Path) -> None:
    kernel, tracefs = setup(tmp_path, LINUX_6_12)
    allows = [
        Filter(type=FilterType.ADDR, addr_start=0x2000, addr_end=0x3000, allow=True),
        Filter(type=FilterType.ADDR, addr_start=0x5000, addr_end=0x6000, allow=True),
    ]
    ctx = context(kernel, tracefs, schemes=[Scheme(action=Action.PAGEOUT, filters=allows)])
    filters = f"{CTX}/schemes/0/filters"
    seen = []

    def after(c: KernelContext) -> None:
        for i in range(int(read(kernel, f"{filters}/nr_filters"))):
            d = f"{filters}/{i}"
            seen.append(
                (
                    read(kernel, f"{d}/type"),
                    read(kernel, f"{d}/addr_start"),
                    read(kernel, f"{d}/addr_end"),
                )
            )

    tracefs.pending = aggregation_lines(PID, 1.0, cold_regions())
    ctx.add_callback("after_aggregation", after)
    ctx.run(nr_aggregations=1)
    assert seen == [
        ("addr", "0", str(0x2000)),
        ("addr", str(0x3000), str(0x5000)),
        ("addr", str(0x6000), str(ULONG_MAX)),
    ]
    # a reject after an allow has no reject-only form: refused in one line, no kdamond left
    mixed = [allows[0], Filter(type=FilterType.ANON)]
    with pytest.raises(KernelFeatureMissing, match=r"allow filters .*Linux 6.14\+"):
        context(kernel, tracefs, schemes=[Scheme(action=Action.PAGEOUT, filters=mixed)]).run(
            nr_aggregations=1
        )
    assert read(kernel, "kdamonds/nr_kdamonds") == "0"


# -- the documented table -------------------------------------------------------------------------


def test_the_docs_table_is_what_the_module_prints() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pydamon.kernel.feature_table"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == features_table()
    assert out in (REPO / "docs" / "kernel-backend.md").read_text()
    assert "| intervals auto-tuning (intervals_goal) | 6.15 | emulated by pydamon" in out
