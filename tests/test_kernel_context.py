"""The kernel-backed context on fake kernels: DAMON sysfs trees laid out like real 6.1 and 6.12
kernels (tests/kernel_tree.py) and a fake tracefs (tests/tracefs_tree.py) under tmp_path. Never
the host's /sys/kernel/mm/damon or its tracefs.

The guest tests (tests/guest/test_kernel_backend.py) run the same API on the real kernels.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from kernel_tree import LINUX_6_1, LINUX_6_12, FakeKernel, fake_kernel, tree_files
from pydamon.core import Attrs, FeatureMissing, Snapshot, Target, TargetGone
from pydamon.damos.scheme import AccessPattern, Action, Filter, FilterType, Scheme, Stats
from pydamon.kernel import KdamondNotOwned, KernelContext, KernelFeatureMissing
from pydamon.kernel.tracefs import AggregationAssembler, parse_line
from tracefs_tree import FakeTracefs, aggregation_lines, fake_tracefs, trace_line

ATTRS = Attrs(
    sample_interval_us=10_000,
    aggr_interval_us=200_000,
    ops_update_interval_us=1_000_000,
    min_nr_regions=10,
    max_nr_regions=100,
)
PID = 4242  # the fake kernel's first kdamond pid
OTHER_KDAMOND = 777


def regions_of(aggregation: int, nr_targets: int = 1) -> list[list[tuple[int, int, int, int]]]:
    """A different, recognisable set of regions for each aggregation and target."""
    base = 0x10000000
    out = []
    for t in range(nr_targets):
        start = base + t * 0x1000000
        rows = []
        for r in range(3 + t):
            end = start + (r + 1 + aggregation) * 0x1000
            rows.append((start, end, (aggregation + r + t) % 20, aggregation + r))
            start = end
        out.append(rows)
    return out


def expected(snap: Snapshot) -> list[tuple[int, int, int, int]]:
    return list(
        zip(snap.starts.tolist(), snap.ends.tolist(), snap.nr_accesses.tolist(), snap.age.tolist())
    )


def kernel_with_tracefs(
    tmp_path: Path, nr_aggregations: int, nr_targets: int = 1
) -> tuple[FakeKernel, FakeTracefs]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    kernel = fake_kernel(tmp_path, LINUX_6_12)
    tracefs = fake_tracefs(tmp_path)
    lines = []
    for a in range(nr_aggregations):
        # another kdamond's aggregation interleaves: it must not show up in ours
        lines += aggregation_lines(OTHER_KDAMOND, 10.0 + a, regions_of(a + 50, nr_targets))
        lines += aggregation_lines(PID, 10.0 + a * 0.2, regions_of(a, nr_targets))
    tracefs.pending = lines
    return kernel, tracefs


def context(
    kernel: FakeKernel, tracefs: FakeTracefs | None, nr_targets: int = 1, **kw: object
) -> KernelContext:
    targets = [Target(pid=os.getpid()) for _ in range(nr_targets)]
    return KernelContext(
        "vaddr",
        targets,
        ATTRS,
        root=str(kernel.root),
        io=kernel,
        tracefs=str(tracefs.root) if tracefs else str(kernel.root.parent / "no-tracefs"),
        tracefs_io=tracefs,
        poll_s=0.01,
        **kw,  # type: ignore[arg-type]
    )


# -- parsing the trace --------------------------------------------------------------------------


def test_parse_line_reads_the_kernels_format() -> None:
    # as the 6.12 guest prints it (trace_pipe of an instance)
    text = (
        "       kdamond.0-92      [000] .....    27.528844: damon_aggregated: target_id=0 "
        "nr_regions=15 140325462417408-140325527244800: 7 4"
    )
    e = parse_line(text)
    assert e is not None
    assert (e.pid, e.timestamp_us, e.target_index, e.nr_regions) == (92, 27_528_844, 0, 15)
    assert (e.start, e.end, e.nr_accesses, e.age) == (140325462417408, 140325527244800, 7, 4)
    # a comm with dashes, the 6.1 flags field, other events and garbage are told apart
    odd = "kdamond-x-y-12 [1] d..1 5.000001: damon_aggregated: target_id=2 nr_regions=1 0-4096: 1 2"
    assert parse_line(odd) is not None and parse_line(odd).pid == 12  # type: ignore[union-attr]
    assert parse_line(text.replace("damon_aggregated", "damos_before_apply")) is None
    assert parse_line("# tracer: nop") is None


def test_assembler_groups_per_aggregation_and_filters_other_kdamonds() -> None:
    asm = AggregationAssembler(nr_targets=2, pid=PID)
    lines = []
    for a in range(3):
        lines += aggregation_lines(OTHER_KDAMOND, a, regions_of(a + 9, 2))
        lines += aggregation_lines(PID, 1.5 + a, regions_of(a, 2))
    # fed in arbitrary chunks, as reads of the pipe cut them
    got = []
    for i in range(0, len(lines), 5):
        got += asm.feed(lines[i : i + 5])
    assert [agg.regions for agg in got] == [regions_of(a, 2) for a in range(3)]
    assert [agg.timestamp_us for agg in got] == [1_500_000, 2_500_000, 3_500_000]
    assert asm.dropped == 0


def test_assembler_drops_a_broken_aggregation_and_resynchronises() -> None:
    asm = AggregationAssembler(nr_targets=2, pid=PID)
    first = aggregation_lines(PID, 1.0, regions_of(0, 2))
    second = aggregation_lines(PID, 2.0, regions_of(1, 2))
    third = aggregation_lines(PID, 3.0, regions_of(2, 2))
    # lines missing in the middle of the first aggregation
    got = asm.feed(first[:2] + first[4:] + second + third)
    assert [agg.regions for agg in got] == [regions_of(1, 2), regions_of(2, 2)]
    assert asm.dropped == 1
    # trace_pipe says it lost events (overwritten oldest first): what follows up to the next
    # target 0 may lack its aggregation's first targets, so it is not a snapshot
    lost = "CPU:0 [LOST 12 EVENTS]"
    asm = AggregationAssembler(nr_targets=2, pid=PID)
    got = asm.feed(first[:2] + [lost] + first[3:] + second[:1] + [lost] + second[4:] + third)
    assert [agg.regions for agg in got] == [regions_of(2, 2)]
    assert asm.dropped == 2


def test_assembler_takes_targets_without_regions() -> None:
    asm = AggregationAssembler(nr_targets=3)
    one = [(0, 4096, 1, 2)]
    lines = [trace_line(PID, 1.0, 1, 1, *one[0]), trace_line(PID, 2.0, 1, 1, *one[0])]
    got = asm.feed(lines)
    # targets 0 and 2 have no regions: the first aggregation is whole once the next starts
    assert [agg.regions for agg in got] == [[[], one, []]]
    assert asm.dropped == 0


# -- running on the fake kernel -------------------------------------------------------------------


def test_run_gives_each_aggregation_and_leaves_the_tree_as_it_was(tmp_path: Path) -> None:
    kernel, tracefs = kernel_with_tracefs(tmp_path, 4, nr_targets=2)
    before = tree_files(kernel.root)
    ctx = context(kernel, tracefs, nr_targets=2)
    seen: list[list[Snapshot]] = []
    running: list[str] = []

    def after(c: KernelContext) -> None:
        seen.append(c.snapshots())
        running.append((kernel.root / "kdamonds/0/state").read_text().strip())

    ctx.add_callback("after_aggregation", after)
    ctx.run(nr_aggregations=3)
    assert ctx.results == "tracefs" and ctx.meta["results"] == "tracefs"
    assert len(seen) == 3 and running == ["on"] * 3
    for a, snaps in enumerate(seen):
        assert [expected(s) for s in snaps] == regions_of(a, 2)
        assert [s.target_index for s in snaps] == [0, 1]
        assert all(s.aggr_interval_us == ATTRS.aggr_interval_us for s in snaps)
    # the tracepoint's times, one aggregation after the other
    assert seen[1][0].start_us == seen[0][0].end_us == 10_000_000
    assert ctx.nr_aggregations == 3 and ctx.snapshot(1).nr_regions == 4
    # kdamond off and removed, the trace instance gone: the tree is as before
    assert (0, "on") in kernel.commands and (0, "off") in kernel.commands
    assert tree_files(kernel.root) == before
    assert tracefs.opened and tracefs.removed == tracefs.opened
    assert not os.listdir(tracefs.root / "instances")
    name = os.path.basename(tracefs.opened[0])
    assert name == f"pydamon-{os.getpid()}"
    assert not ctx.is_running


def test_aggregations_iterator_and_break_turns_the_kdamond_off(tmp_path: Path) -> None:
    kernel, tracefs = kernel_with_tracefs(tmp_path, 5)
    ctx = context(kernel, tracefs)
    got = []
    for snaps in ctx.aggregations():
        got.append(expected(snaps[0]))
        if len(got) == 2:
            assert (kernel.root / "kdamonds/0/state").read_text().strip() == "on"
            break
    assert got == [regions_of(0)[0], regions_of(1)[0]]
    assert kernel.commands[-1] == (0, "off")
    assert (kernel.root / "kdamonds/nr_kdamonds").read_text().strip() == "0"


def test_keyboard_interrupt_and_errors_leave_no_kdamond(tmp_path: Path) -> None:
    for error in (KeyboardInterrupt, ValueError):
        kernel, tracefs = kernel_with_tracefs(tmp_path / error.__name__, 3)
        ctx = context(kernel, tracefs)
        terminated: list[bool] = []

        def on_terminate(c: KernelContext, terminated: list[bool] = terminated) -> None:
            terminated.append(True)

        ctx.add_callback("before_terminate", on_terminate)

        def boom(c: KernelContext, error: type[BaseException] = error) -> None:
            raise error()

        ctx.add_callback("after_aggregation", boom)
        with pytest.raises(error):
            ctx.run(nr_aggregations=3)
        assert kernel.commands[-1] == (0, "off"), error
        assert (kernel.root / "kdamonds/nr_kdamonds").read_text().strip() == "0"
        assert not os.listdir(tracefs.root / "instances") and terminated == [True]


def test_stop_from_a_callback_and_background_start(tmp_path: Path) -> None:
    kernel, tracefs = kernel_with_tracefs(tmp_path / "a", 5)
    ctx = context(kernel, tracefs)
    ctx.add_callback("after_aggregation", lambda c: c.stop() if c.nr_aggregations == 2 else None)
    ctx.run()
    assert ctx.nr_aggregations == 2 and kernel.commands[-1] == (0, "off")

    kernel, tracefs = kernel_with_tracefs(tmp_path / "b", 2)
    ctx = context(kernel, tracefs)
    ctx.start()
    deadline = time.monotonic() + 20
    while ctx.nr_aggregations < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not ctx.wait(0.2)  # no limit: it keeps running, waiting for more aggregations
    assert ctx.is_running and ctx.nr_aggregations == 2
    ctx.stop()
    assert ctx.wait(10) and not ctx.is_running
    assert kernel.commands[-1] == (0, "off")


def test_run_ends_when_the_kdamond_stops_itself(tmp_path: Path) -> None:
    kernel, tracefs = kernel_with_tracefs(tmp_path, 2)
    ctx = context(kernel, tracefs)

    def targets_gone(c: KernelContext) -> None:
        # the kernel turns a kdamond off when all its targets are gone
        kernel.put("kdamonds/0/state", "off")

    ctx.add_callback("after_aggregation", targets_gone)
    started = time.monotonic()
    ctx.run(duration_us=20_000_000)
    # what the kdamond traced before it stopped is delivered, then the run ends
    assert ctx.nr_aggregations == 2 and time.monotonic() - started < 10
    assert (kernel.root / "kdamonds/nr_kdamonds").read_text().strip() == "0"


def test_a_kdamond_made_by_hand_is_left_alone(tmp_path: Path) -> None:
    kernel, tracefs = kernel_with_tracefs(tmp_path, 2)
    kernel.write(str(kernel.root / "kdamonds/nr_kdamonds"), "1")
    kernel.write(str(kernel.root / "kdamonds/0/contexts/nr_contexts"), "1")
    kernel.write(str(kernel.root / "kdamonds/0/state"), "on")
    kernel.commands.clear()
    before = tree_files(kernel.root)
    ctx = context(kernel, tracefs)
    with pytest.raises(KdamondNotOwned) as err:
        ctx.run(nr_aggregations=1)
    assert "\n" not in str(err.value) and "did not create" in str(err.value)
    assert tree_files(kernel.root) == before and kernel.commands == []
    assert tracefs.opened == [] and not os.listdir(tracefs.root / "instances")


def test_no_tracefs_and_no_tried_regions_is_refused_in_one_line(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_1)
    before = tree_files(kernel.root)
    ctx = context(kernel, None)
    with pytest.raises(FeatureMissing) as err:
        ctx.run(nr_aggregations=1)
    text = str(err.value)
    assert "\n" not in text and "tracefs" in text and "tried regions (Linux 6.2+)" in text
    assert tree_files(kernel.root) == before  # the probe staged and removed its kdamond only
    with pytest.raises(KernelFeatureMissing, match=r"tried regions \(Linux 6.2\+\)"):
        context(kernel, None, results="tried_regions").run(nr_aggregations=1)
    with pytest.raises(FeatureMissing, match="no tracefs"):
        context(kernel, None, results="tracefs").run(nr_aggregations=1)


def test_tracefs_on_6_1_and_what_it_lacks_is_refused(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_1)
    tracefs = fake_tracefs(tmp_path)
    tracefs.pending = aggregation_lines(PID, 1.0, regions_of(0))
    ctx = context(kernel, tracefs)
    ctx.run(nr_aggregations=1)
    assert expected(ctx.snapshot()) == regions_of(0)[0]
    # a filter (6.3) on 6.1: one line naming it, before any kdamond is made
    scheme = Scheme(action=Action.PAGEOUT, filters=[Filter(FilterType.ANON)])
    with pytest.raises(KernelFeatureMissing, match=r"DAMOS filters \(Linux 6.3\+\)"):
        context(kernel, tracefs, schemes=[scheme]).run(nr_aggregations=1)
    ctx = context(kernel, tracefs)
    tracefs.pending = aggregation_lines(PID + 1, 1.0, regions_of(0))
    ctx.add_callback("after_aggregation", lambda c: c.update_tried_regions())
    with pytest.raises(KernelFeatureMissing, match=r"tried regions \(Linux 6.2\+\)"):
        ctx.run(nr_aggregations=1)
    assert (kernel.root / "kdamonds/nr_kdamonds").read_text().strip() == "0"


def test_tried_regions_snapshots_stats_and_scheme_tried_regions(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_12)
    user = Scheme(pattern=AccessPattern(min_nr_accesses=5), action=Action.STAT)
    # what the kernel reports: scheme 0 is the user's, scheme 1 pydamon's snapshot scheme
    every = [dict(start=s, end=e, nr_accesses=n, age=a) for s, e, n, a in regions_of(3)[0]]
    kernel.kernel_tried[(0, 0, 1)] = every
    kernel.kernel_tried[(0, 0, 0)] = [r for r in every if r["nr_accesses"] >= 5]
    kernel.kernel_stats[(0, 0, 0)] = {"nr_tried": 7, "sz_tried": 4096 * 7}
    ctx = context(kernel, None, schemes=[user])
    seen = []

    def after(c: KernelContext) -> None:
        nr_schemes = (kernel.root / "kdamonds/0/contexts/0/schemes/nr_schemes").read_text()
        seen.append((expected(c.snapshot()), nr_schemes.strip(), c.schemes[0].stats.nr_tried))

    ctx.add_callback("after_aggregation", after)
    ctx.run(nr_aggregations=2)
    assert ctx.results == "tried_regions" and "no tracefs" in ctx.results_reason
    assert [s[0] for s in seen] == [regions_of(3)[0]] * 2
    assert [s[1] for s in seen] == ["2", "2"]  # the user's scheme and the snapshot scheme
    assert [s[2] for s in seen] == [7, 7]
    assert user.stats == Stats(nr_tried=7, sz_tried=4096 * 7)
    assert [(r.start, r.nr_accesses) for r in user.tried_regions] == [
        (r["start"], r["nr_accesses"]) for r in every if r["nr_accesses"] >= 5
    ]
    assert (kernel.root / "kdamonds/nr_kdamonds").read_text().strip() == "0"


def test_tried_regions_of_several_targets_use_target_filters(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_12)
    for t in range(2):
        rows = regions_of(1, 2)[t]
        kernel.kernel_tried[(0, 0, t)] = [
            dict(start=s, end=e, nr_accesses=n, age=a) for s, e, n, a in rows
        ]
    ctx = context(kernel, None, nr_targets=2)
    filters = []

    def after(c: KernelContext) -> None:
        for s in range(2):
            f = kernel.root / f"kdamonds/0/contexts/0/schemes/{s}/filters/0"
            filters.append(tuple((f / n).read_text().strip() for n in ("type", "matching")))
            filters.append((f / "damon_target_idx").read_text().strip())

    ctx.add_callback("after_aggregation", after)
    ctx.run(nr_aggregations=1)
    assert [expected(s) for s in ctx.snapshots()] == regions_of(1, 2)
    assert filters == [("target", "N"), "0", ("target", "N"), "1"]


def test_set_attrs_commits_online_and_stats_never_go_backwards(tmp_path: Path) -> None:
    kernel, tracefs = kernel_with_tracefs(tmp_path, 3)
    scheme = Scheme(action=Action.STAT)
    kernel.kernel_stats[(0, 0, 0)] = {"nr_tried": 10, "sz_applied": 100}
    ctx = context(kernel, tracefs, schemes=[scheme])
    new = Attrs(
        sample_interval_us=20_000,
        aggr_interval_us=400_000,
        ops_update_interval_us=1_000_000,
        min_nr_regions=10,
        max_nr_regions=100,
    )
    intervals = kernel.root / "kdamonds/0/contexts/0/monitoring_attrs/intervals"
    seen = []

    def after(c: KernelContext) -> None:
        seen.append((c.snapshot().aggr_interval_us, scheme.stats.nr_tried))
        if c.nr_aggregations == 2:
            c.set_attrs(new)
            assert (intervals / "aggr_us").read_text().strip() == "400000"
            # an older kernel recreated the scheme on commit: its counters start again
            kernel.kernel_stats[(0, 0, 0)] = {"nr_tried": 3, "sz_applied": 30}
            # aggregation 2 was traced before the commit (the fake's times are long past);
            # aggregation 3 comes after it, on the monotonic clock the instance traces with
            instance = os.listdir(tracefs.root / "instances")[0]
            assert tracefs.read(f"instances/{instance}/trace_clock").strip() == "mono"
            tracefs.emit(aggregation_lines(PID, time.monotonic() + 1, regions_of(3)))

    ctx.add_callback("after_aggregation", after)
    ctx.run(nr_aggregations=4)
    assert (0, "commit") in kernel.commands
    assert [a for a, _ in seen] == [200_000, 200_000, 200_000, 400_000]
    assert [n for _, n in seen] == [0, 10, 13, 13]
    assert scheme.stats.nr_tried == 13 and scheme.stats.sz_applied == 130
    assert ctx.attrs.aggr_interval_us == 400_000


def test_bad_configurations_are_one_line(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_12)
    with pytest.raises(ValueError, match="results source"):
        context(kernel, None, results="perf")
    with pytest.raises(ValueError, match="after_wmarks_check"):
        no_cb = context(kernel, None)
        no_cb.add_callback("after_wmarks_check", lambda c: None)  # type: ignore[arg-type]
    gone = KernelContext(
        "vaddr", [Target(pid=2**22 + 12345)], ATTRS, root=str(kernel.root), io=kernel
    )
    with pytest.raises(TargetGone, match="does not exist"):
        gone.run(nr_aggregations=1)
    assert (kernel.root / "kdamonds/nr_kdamonds").read_text().strip() == "0"
