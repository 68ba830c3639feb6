"""The kernel backend's sysfs writer and reader on temporary trees laid out like real kernels
(tests/kernel_tree.py). Never the host's /sys/kernel/mm/damon."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernel_tree import LINUX_6_1, LINUX_6_12, LINUX_7_1, FakeKernel, fake_kernel, tree_files
from pydamon.core import Attrs, FeatureMissing, IntervalsGoal, Target
from pydamon.damos.scheme import (
    ULONG_MAX,
    AccessPattern,
    Action,
    AgeUnit,
    Filter,
    FilterType,
    GoalMetric,
    GoalTuner,
    NrAccessesUnit,
    Quota,
    QuotaGoal,
    Scheme,
    Watermarks,
    WmarkMetric,
)
from pydamon.kernel import (
    ContextConfig,
    DamonSysfs,
    KdamondNotOwned,
    KernelConfigError,
    KernelFeatureMissing,
    KernelPrivilegeMissing,
    KernelSysfsError,
    SysfsIO,
    probe,
)

ATTRS = Attrs(
    sample_interval_us=10_000,
    aggr_interval_us=200_000,
    ops_update_interval_us=1_000_000,
    min_nr_regions=20,
    max_nr_regions=500,
)


def full_scheme() -> Scheme:
    """A pageout scheme using every part a 7.x kernel has."""
    return Scheme(
        pattern=AccessPattern(
            min_sz_bytes=4096,
            max_sz_bytes=1 << 30,
            min_nr_accesses=0,
            max_nr_accesses=10,
            nr_accesses_unit=NrAccessesUnit.PERCENT,
            min_age=2_000_000,
            age_unit=AgeUnit.USEC,
        ),
        action=Action.PAGEOUT,
        apply_interval_us=1_000_000,
        quota=Quota(
            ms=10,
            sz=128 << 20,
            reset_interval_ms=1000,
            weight_sz_permil=1,
            weight_nr_accesses_permil=2,
            weight_age_permil=3,
            goals=[
                QuotaGoal(GoalMetric.SOME_MEM_PSI_US, target_value=1000),
                QuotaGoal(GoalMetric.NODE_MEM_FREE_BP, target_value=5000, nid=0),
                QuotaGoal(GoalMetric.NODE_MEMCG_USED_BP, target_value=3000, nid=1, path="/a"),
            ],
            goal_tuner=GoalTuner.TEMPORAL,
        ),
        wmarks=Watermarks(WmarkMetric.FREE_MEM_RATE, 5_000_000, 800, 500, 200),
        filters=[
            Filter(FilterType.ANON, matching=True, allow=False),
            Filter(FilterType.ADDR, allow=True, addr_start=0x1000, addr_end=0x3000),
            Filter(FilterType.MEMCG, matching=False, memcg_path="/workload"),
            Filter(FilterType.TARGET, target_idx=0),
            Filter(FilterType.HUGEPAGE_SIZE, min_sz=2 << 20, max_sz=2 << 20),
        ],
    )


def full_config() -> list[ContextConfig]:
    attrs = Attrs(
        sample_interval_us=10_000,
        aggr_interval_us=200_000,
        ops_update_interval_us=1_000_000,
        min_nr_regions=20,
        max_nr_regions=500,
        intervals_goal=IntervalsGoal(400, 3, 5_000, 10_000_000),
    )
    migrate = Scheme(action=Action.MIGRATE_COLD, target_nid=1)
    target = Target(pid=1234, ranges=[(0x1000, 0x5000), (0x8000, 0x9000)])
    return [ContextConfig("vaddr", attrs, [target], [full_scheme(), migrate])]


def new_kdamond(kernel: FakeKernel) -> tuple[DamonSysfs, int]:
    damon = DamonSysfs(str(kernel.root), io=kernel)
    return damon, damon.add_kdamonds()[0]


def test_full_config_writes_the_kernel_files_in_kernel_units(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_7_1)
    damon, k = new_kdamond(kernel)
    before = tree_files(kernel.root)
    # probing stages its configuration in the owned, empty kdamond and removes it again
    caps = probe(str(kernel.root), io=kernel, owned=damon.owned, stage=True)
    assert caps.probed_by == "staged a probe configuration"
    assert tree_files(kernel.root) == before
    damon.write(k, full_config(), caps)
    files = tree_files(kernel.root)

    def value(rel: str) -> str:
        return files[f"kdamonds/{k}/contexts/0/{rel}"].strip()

    assert files["kdamonds/nr_kdamonds"].strip() == "1"
    assert value("operations") == "vaddr"
    expected_attrs = {
        "sample_us": "10000",
        "aggr_us": "200000",
        "update_us": "1000000",
        "intervals_goal/access_bp": "400",
        "intervals_goal/aggrs": "3",
        "intervals_goal/min_sample_us": "5000",
        "intervals_goal/max_sample_us": "10000000",
    }
    for rel, expected in expected_attrs.items():
        assert value(f"monitoring_attrs/intervals/{rel}") == expected, rel
    assert value("monitoring_attrs/nr_regions/min") == "20"
    assert value("monitoring_attrs/nr_regions/max") == "500"
    assert value("targets/nr_targets") == "1"
    assert value("targets/0/pid_target") == "1234"
    assert value("targets/0/regions/nr_regions") == "2"
    assert (value("targets/0/regions/1/start"), value("targets/0/regions/1/end")) == (
        str(0x8000),
        str(0x9000),
    )
    assert value("schemes/nr_schemes") == "2"
    s = "schemes/0"
    # 10 % of 20 samples per aggregation = 2 samples; 2 s / 200 ms = 10 aggregation intervals
    expected_scheme = {
        "access_pattern/sz/min": "4096",
        "access_pattern/sz/max": str(1 << 30),
        "access_pattern/nr_accesses/min": "0",
        "access_pattern/nr_accesses/max": "2",
        "access_pattern/age/min": "10",
        "access_pattern/age/max": str(ULONG_MAX),
        "action": "pageout",
        "apply_interval_us": "1000000",
        "target_nid": "-1",
        "quotas/ms": "10",
        "quotas/bytes": str(128 << 20),
        "quotas/reset_interval_ms": "1000",
        "quotas/weights/sz_permil": "1",
        "quotas/weights/nr_accesses_permil": "2",
        "quotas/weights/age_permil": "3",
        "quotas/goal_tuner": "temporal",
        "quotas/goals/nr_goals": "3",
        "quotas/goals/0/target_metric": "some_mem_psi_us",
        "quotas/goals/0/target_value": "1000",
        "quotas/goals/1/target_metric": "node_mem_free_bp",
        "quotas/goals/1/nid": "0",
        "quotas/goals/2/target_metric": "node_memcg_used_bp",
        "quotas/goals/2/nid": "1",
        "quotas/goals/2/path": "/a",
        "quotas/goals/2/target_value": "3000",
        "watermarks/metric": "free_mem_rate",
        "watermarks/interval_us": "5000000",
        "watermarks/high": "800",
        "watermarks/mid": "500",
        "watermarks/low": "200",
    }
    for rel, expected in expected_scheme.items():
        assert value(f"{s}/{rel}") == expected, rel
    # core filters (addr, target) and ops filters in their own directories, order kept
    assert value(f"{s}/core_filters/nr_filters") == "2"
    assert value(f"{s}/core_filters/0/type") == "addr"
    assert value(f"{s}/core_filters/0/allow") == "Y"
    assert value(f"{s}/core_filters/0/addr_start") == str(0x1000)
    assert value(f"{s}/core_filters/0/addr_end") == str(0x3000)
    assert value(f"{s}/core_filters/1/type") == "target"
    assert value(f"{s}/core_filters/1/damon_target_idx") == "0"
    assert value(f"{s}/ops_filters/nr_filters") == "3"
    ops = [value(f"{s}/ops_filters/{i}/type") for i in range(3)]
    assert ops == ["anon", "memcg", "hugepage_size"]
    assert value(f"{s}/ops_filters/0/matching") == "Y"
    assert value(f"{s}/ops_filters/0/allow") == "N"
    assert value(f"{s}/ops_filters/1/matching") == "N"
    assert value(f"{s}/ops_filters/1/memcg_path") == "/workload"
    assert value(f"{s}/ops_filters/2/min") == str(2 << 20)
    assert value(f"{s}/filters/nr_filters") == "0"
    assert value("schemes/1/action") == "migrate_cold"
    assert value("schemes/1/target_nid") == "1"


def test_6_12_gets_all_filters_in_the_one_filters_directory(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_12)
    damon, k = new_kdamond(kernel)
    scheme = Scheme(
        action=Action.STAT,
        apply_interval_us=500_000,
        filters=[
            Filter(FilterType.YOUNG),
            Filter(FilterType.ADDR, addr_start=0, addr_end=4096),
        ],
        quota=Quota(sz=1 << 20, goals=[QuotaGoal(GoalMetric.USER_INPUT, 100, current_value=7)]),
    )
    caps = probe(str(kernel.root), io=kernel, owned={k}, stage=True)
    damon.write(k, [ContextConfig("paddr", ATTRS, [Target(ranges=[(0, 1 << 30)])], [scheme])], caps)
    s = kernel.root / f"kdamonds/{k}/contexts/0/schemes/0"
    assert (s / "filters/nr_filters").read_text().strip() == "2"
    assert (s / "filters/0/type").read_text().strip() == "young"
    assert (s / "filters/1/type").read_text().strip() == "addr"
    assert (s / "filters/1/addr_end").read_text().strip() == "4096"
    assert (s / "apply_interval_us").read_text().strip() == "500000"
    assert (s / "quotas/goals/0/current_value").read_text().strip() == "7"
    t = kernel.root / f"kdamonds/{k}/contexts/0/targets/0"
    assert (t / "pid_target").read_text().strip() == "0"  # paddr: no pid written
    assert (t / "regions/0/end").read_text().strip() == str(1 << 30)


@pytest.mark.parametrize(
    ("layout", "scheme", "attrs", "expected"),
    [
        (
            LINUX_6_1,
            Scheme(
                apply_interval_us=1000,
                filters=[Filter(FilterType.ANON)],
                quota=Quota(goals=[QuotaGoal(target_value=5)]),
            ),
            ATTRS,
            "DAMOS apply intervals (apply_interval_us) (Linux 6.7+); DAMOS quota goals "
            "(Linux 6.8+); DAMOS filters (Linux 6.3+)",
        ),
        (LINUX_6_1, Scheme(action=Action.MIGRATE_HOT), ATTRS, "the DAMOS action migrate_hot"),
        (
            LINUX_6_12,
            Scheme(
                quota=Quota(
                    goals=[QuotaGoal(GoalMetric.NODE_MEM_FREE_BP, 10, nid=0)],
                    goal_tuner=GoalTuner.TEMPORAL,
                ),
                filters=[Filter(FilterType.HUGEPAGE_SIZE, allow=True, max_sz=4096)],
            ),
            Attrs(intervals_goal=IntervalsGoal(400, 3, 1000, 10_000)),
            "monitoring intervals auto-tuning (intervals_goal) (Linux 6.15+); "
            "the quota goal metric node_mem_free_bp (Linux 6.16+); "
            "the quota goal tuner temporal (Linux 7.1+); "
            "the DAMOS filter type hugepage_size (Linux 6.15+); "
            "allow filters (DAMOS filter 'allow') (Linux 6.14+)",
        ),
    ],
)
def test_what_an_older_kernel_lacks_is_refused_in_one_line_and_nothing_written(
    tmp_path: Path, layout: object, scheme: Scheme, attrs: Attrs, expected: str
) -> None:
    assert layout in (LINUX_6_1, LINUX_6_12)
    kernel = fake_kernel(tmp_path, layout)  # type: ignore[arg-type]
    caps = probe(str(kernel.root), io=kernel, stage=True)
    damon, k = new_kdamond(kernel)
    before = tree_files(kernel.root)
    ctx = ContextConfig("vaddr", attrs, [Target(pid=1)], [scheme])
    with pytest.raises(KernelFeatureMissing) as err:
        damon.write(k, [ctx], caps)
    message = str(err.value)
    assert isinstance(err.value, FeatureMissing)
    assert "\n" not in message
    assert message.startswith("this kernel's DAMON lacks ")
    assert expected in message
    assert tree_files(kernel.root) == before


def test_read_back_state_pid_stats_tried_regions_and_commit(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_7_1)
    damon, k = new_kdamond(kernel)
    config = full_config()
    damon.write(k, config)
    assert damon.status(k).state == "off" and damon.pid(k) is None
    with pytest.raises(KernelSysfsError, match="is off; 'update_schemes_stats' needs it"):
        damon.update_stats(k)
    damon.start(k)
    assert damon.state(k) == "on" and damon.pid(k) == 4242

    kernel.kernel_stats[(k, 0, 0)] = {
        "nr_tried": 5,
        "sz_tried": 40960,
        "nr_applied": 3,
        "sz_applied": 12288,
        "sz_ops_filter_passed": 8192,
        "qt_exceeds": 2,
    }
    stats = damon.update_stats(k)
    assert [len(c) for c in stats] == [2]
    got = stats[0][0]
    assert (got.nr_tried, got.sz_tried, got.nr_applied, got.sz_applied) == (5, 40960, 3, 12288)
    assert (got.sz_ops_filter_passed, got.qt_exceeds) == (8192, 2)
    assert stats[0][1].nr_tried == 0

    kernel.kernel_tried[(k, 0, 1)] = [
        {"start": 0x1000, "end": 0x3000, "nr_accesses": 4, "age": 7, "sz_filter_passed": 4096},
        {"start": 0x8000, "end": 0x9000, "nr_accesses": 0, "age": 30, "sz_filter_passed": 0},
    ]
    tried = damon.tried_regions(k)
    assert tried[0][0] == []
    regions = tried[0][1]
    assert [(r.start, r.end, r.nr_accesses, r.age) for r in regions] == [
        (0x1000, 0x3000, 4, 7),
        (0x8000, 0x9000, 0, 30),
    ]
    assert regions[0].sz_filter_passed == 4096 and regions[0].target_index == 0

    kernel.kernel_tuned[(k, 0)] = (12_345, 246_900)
    tuned = damon.tuned_intervals(k)
    assert [(t.sample_us, t.aggr_us) for t in tuned] == [(12_345, 246_900)]

    kernel.kernel_esz[(k, 0, 0)] = 77 << 20
    assert damon.effective_quotas(k) == [[77 << 20, 0]]

    # online change: new attrs and one scheme fewer, then "commit"
    config[0].attrs = ATTRS
    config[0].schemes = config[0].schemes[:1]
    damon.commit(k, config, probe(str(kernel.root), io=kernel, owned={k}, stage=True))
    ctx = kernel.root / f"kdamonds/{k}/contexts/0"
    assert (ctx / "monitoring_attrs/intervals/aggr_us").read_text().strip() == "200000"
    assert (ctx / "monitoring_attrs/intervals/intervals_goal/aggrs").read_text().strip() == "0"
    assert (ctx / "schemes/nr_schemes").read_text().strip() == "1"
    assert (k, "commit") in kernel.commands
    damon.stop(k)
    assert damon.state(k) == "off" and damon.pid(k) is None


def test_read_backs_a_kernel_lacks_are_refused_by_name(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_1)
    damon, k = new_kdamond(kernel)
    damon.write(k, [ContextConfig("vaddr", ATTRS, [Target(pid=1)], [Scheme()])])
    damon.start(k)
    with pytest.raises(KernelFeatureMissing, match=r"DAMOS tried regions \(Linux 6.2\+\)"):
        damon.tried_regions(k)
    with pytest.raises(KernelFeatureMissing, match=r"intervals_goal\) \(Linux 6.15\+\)"):
        damon.tuned_intervals(k)
    with pytest.raises(KernelFeatureMissing, match=r"effective_bytes\) \(Linux 6.9\+\)"):
        damon.effective_quotas(k)
    assert all(cmd in ("on",) for _k, cmd in kernel.commands)


def hand_made_kdamond(kernel: FakeKernel) -> None:
    """A kdamond someone set up by hand through sysfs (echo into the files), running."""
    root = str(kernel.root)
    for rel, value in (
        ("kdamonds/nr_kdamonds", "1"),
        ("kdamonds/0/contexts/nr_contexts", "1"),
        ("kdamonds/0/contexts/0/operations", "paddr"),
        ("kdamonds/0/contexts/0/targets/nr_targets", "1"),
        ("kdamonds/0/contexts/0/schemes/nr_schemes", "1"),
        ("kdamonds/0/contexts/0/schemes/0/action", "pageout"),
        ("kdamonds/0/contexts/0/schemes/0/filters/nr_filters", "1"),
        ("kdamonds/0/contexts/0/schemes/0/filters/0/type", "young"),
        ("kdamonds/0/state", "on"),
    ):
        kernel.write(f"{root}/{rel}", value)


def test_a_kdamond_pydamon_did_not_create_is_left_exactly_as_it_was(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_12)
    hand_made_kdamond(kernel)
    before = tree_files(kernel.root)
    damon = DamonSysfs(str(kernel.root), io=kernel)
    with pytest.raises(KdamondNotOwned) as err:
        damon.add_kdamonds()
    assert "\n" not in str(err.value) and "did not create" in str(err.value)
    ctx = ContextConfig("vaddr", ATTRS, [Target(pid=1)], [Scheme()])
    for attempt in (
        lambda: damon.write(0, [ctx]),
        lambda: damon.stop(0),
        lambda: damon.commit(0, [ctx]),
        lambda: damon.update_stats(0),
        lambda: damon.tried_regions(0),
    ):
        with pytest.raises(KdamondNotOwned, match="kdamond 0 .* not created by pydamon"):
            attempt()
    # reading is fine, and so is probing (it only reads when kdamonds exist)
    assert [(s.index, s.state, s.pid, s.owned) for s in damon.kdamonds()] == [
        (0, "on", 4242, False)
    ]
    caps = probe(str(kernel.root), io=kernel, stage=True)
    assert caps.probed_by == "read existing kdamonds"
    assert tree_files(kernel.root) == before
    assert kernel.commands == [(0, "on")]  # only the hand-made start


def test_kdamonds_are_added_when_all_existing_are_pydamons_own(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_12)
    damon, first = new_kdamond(kernel)
    assert first == 0 and damon.owned == {0}
    assert damon.add_kdamonds(2) == [1, 2]
    assert (kernel.root / "kdamonds/nr_kdamonds").read_text().strip() == "3"
    # a second process knowing only kdamond 0 as its own must not add any
    other = DamonSysfs(str(kernel.root), io=kernel, owned={0})
    with pytest.raises(KdamondNotOwned, match="kdamond\\(s\\) 1, 2 that pydamon did not create"):
        other.add_kdamonds()
    # running owned kdamonds cannot be recreated: refused before the kernel's EBUSY
    damon.write(0, [ContextConfig("vaddr", ATTRS, [Target(pid=1)], [])])
    damon.start(0)
    with pytest.raises(KernelSysfsError, match="kdamond 0 is running"):
        damon.add_kdamonds()


def test_missing_privileges_give_one_line_run_as_root(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_12)
    kernel.deny_writes = True
    damon = DamonSysfs(str(kernel.root), io=kernel)
    with pytest.raises(KernelPrivilegeMissing) as err:
        damon.add_kdamonds()
    assert isinstance(err.value, FeatureMissing)
    message = str(err.value)
    assert "\n" not in message and message.endswith("run as root")
    assert "nr_kdamonds" in message and "Permission denied" in message
    # the kernel's files are root's only: reading them unprivileged says the same
    kernel.deny_reads = True
    with pytest.raises(KernelPrivilegeMissing, match=r"cannot read .*nr_kdamonds: .*run as root$"):
        damon.kdamonds()


def test_a_busy_sysfs_lock_is_waited_for_then_named_in_one_line(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_7_1)
    damon, k = new_kdamond(kernel)
    damon.write(k, full_config())
    # someone else holds damon_sysfs_lock for a while (another kdamond's commit, a tried-regions
    # update waiting for its kdamond): reads and writes wait for it instead of failing
    kernel.busy = 5
    damon.start(k)
    assert kernel.nr_busy == 5 and damon.state(k) == "on"
    kernel.busy, kernel.nr_busy = 3, 0
    assert damon.pid(k) == 4242 and kernel.nr_busy == 3
    # held for longer than the wait: one line naming the file and what to do
    damon.fs.busy_timeout_s = 0.05
    kernel.busy = 10**9
    with pytest.raises(KernelSysfsError) as err:
        damon.state(k)
    message = str(err.value)
    assert "\n" not in message and f"kdamonds/{k}/state" in message and "busy" in message
    assert "retry" in message
    with pytest.raises(KernelSysfsError, match=r"refused 'off' for .*state: busy for 0.05 s"):
        damon.stop(k)


def test_plain_io_never_creates_a_file_the_kernel_lacks(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_1)
    damon, k = new_kdamond(kernel)
    plain = DamonSysfs(str(kernel.root), io=SysfsIO(), owned={k})
    # plain file IO on the same tree: a file the layout has is written...
    plain.fs.write(f"kdamonds/{k}/contexts/nr_contexts", 1)
    assert (kernel.root / f"kdamonds/{k}/contexts/nr_contexts").read_text() == "1"
    # ...one it does not have is an error, and does not appear
    with pytest.raises(KernelSysfsError, match="refused .*refresh_ms: No such file"):
        plain.fs.write(f"kdamonds/{k}/refresh_ms", 100)
    assert not (kernel.root / f"kdamonds/{k}/refresh_ms").exists()


def test_invalid_targets_are_refused_before_writing(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_12)
    damon, k = new_kdamond(kernel)
    before = tree_files(kernel.root)
    for ctx, match in (
        (ContextConfig("vaddr", ATTRS, [Target()], []), "vaddr operations set needs a pid"),
        (ContextConfig("paddr", ATTRS, [Target()], []), "paddr needs the physical address"),
        (ContextConfig("paddr", ATTRS, [Target(ranges=[(10, 10)])], []), "is empty"),
        (ContextConfig("sim", ATTRS, [], []), "no operations set 'sim'; use one of vaddr"),
    ):
        with pytest.raises(KernelConfigError, match=match):
            damon.write(k, [ctx])
    assert tree_files(kernel.root) == before


def test_a_tree_without_damon_sysfs_is_named(tmp_path: Path) -> None:
    damon = DamonSysfs(str(tmp_path))
    with pytest.raises(KernelFeatureMissing, match=r"DAMON sysfs interface .* \(Linux 5.18\+\)"):
        damon.add_kdamonds()
