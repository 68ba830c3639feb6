"""Capabilities probed from the files a kernel's DAMON sysfs tree exposes (fake 6.1, 6.12 and
7.1 trees under tmp_path; never the host's tree)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kernel_tree import LAYOUTS, LINUX_6_1, LINUX_6_12, LINUX_7_1, Layout, fake_kernel, tree_files
from pydamon.core import Attrs, FeatureMissing, IntervalsGoal, Target
from pydamon.damos.scheme import Action, Filter, FilterType, Scheme
from pydamon.kernel import ContextConfig, KernelFeatureMissing, missing_features, probe, require

#: Feature files each layout has, by the capabilities' names.
FILES = {
    "6.1": {"avail_operations"},
    "6.12": {
        "avail_operations",
        "tried_regions",
        "filters",
        "tried_regions_total_bytes",
        "apply_interval",
        "quota_goals",
        "effective_quotas",
        "target_nid",
    },
}
FILES["7.1"] = FILES["6.12"] | {
    "sz_ops_filter_passed",
    "core_ops_filter_dirs",
    "intervals_goal",
    "dests",
    "refresh_ms",
    "addr_unit",
    "obsolete_target",
    "nr_snapshots",
    "goal_tuner",
}
FLOOR = {"6.1": "5.19", "6.12": "6.11", "7.1": "7.1"}


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=list(LAYOUTS))
def test_staged_probe_finds_what_each_kernel_has_and_leaves_no_trace(
    tmp_path: Path, layout: Layout
) -> None:
    kernel = fake_kernel(tmp_path, layout)
    before = tree_files(kernel.root)
    caps = probe(str(kernel.root), io=kernel, stage=True)
    assert tree_files(kernel.root) == before
    assert caps.sysfs and caps.inspected and caps.probed_by == "staged a probe configuration"
    assert set(caps.operations) == set(layout.operations)
    assert set(caps.actions) == set(layout.actions)
    assert set(caps.filter_types) == set(layout.filter_types)
    assert set(caps.goal_metrics) == set(layout.goal_metrics)
    assert set(caps.goal_tuners) == set(layout.goal_tuners)
    assert set(caps.stats_fields) == set(layout.stats)
    assert set(caps.tried_region_fields) == set(layout.tried_region)
    assert {name for name, present in caps.files.items() if present} == FILES[layout.name]
    assert caps.allow_filters == ("allow" in layout.filter)
    assert caps.version_floor == FLOOR[layout.name]
    expected_dirs = [
        d for d in ("core_filters", "ops_filters", "filters") if d in layout.scheme_dirs
    ]
    assert list(caps.filter_dirs) == expected_dirs
    # for `pydamon features`: plain data
    assert json.loads(json.dumps(caps.to_dict()))["version_floor"] == FLOOR[layout.name]


def test_read_only_probe_infers_names_from_the_newest_feature_file(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_12)
    root = str(kernel.root)
    for rel, value in (
        ("kdamonds/nr_kdamonds", "1"),
        ("kdamonds/0/contexts/nr_contexts", "1"),
        ("kdamonds/0/contexts/0/targets/nr_targets", "1"),
        ("kdamonds/0/contexts/0/schemes/nr_schemes", "1"),
        ("kdamonds/0/contexts/0/schemes/0/filters/nr_filters", "1"),
        ("kdamonds/0/contexts/0/schemes/0/quotas/goals/nr_goals", "1"),
    ):
        kernel.write(f"{root}/{rel}", value)
    before = tree_files(kernel.root)
    caps = probe(root, io=kernel, stage=True)  # kdamond 0 is not ours: read only
    assert tree_files(kernel.root) == before
    assert caps.probed_by == "read existing kdamonds"
    # 6.11's target_nid is the newest file here: what 6.11 has, which 6.12 has too
    assert set(caps.actions) == set(LINUX_6_12.actions)
    assert set(caps.filter_types) == set(LINUX_6_12.filter_types)
    assert set(caps.goal_metrics) == set(LINUX_6_12.goal_metrics)
    assert caps.goal_tuners == () and not caps.allow_filters


def test_existing_kdamonds_without_contexts_tell_nothing(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_7_1)
    kernel.write(f"{kernel.root}/kdamonds/nr_kdamonds", "1")
    caps = probe(str(kernel.root), io=kernel, stage=True)  # not owned: no staging
    assert caps.sysfs and not caps.inspected
    with pytest.raises(FeatureMissing, match="cannot tell what the DAMON sysfs tree"):
        require(caps, [ContextConfig("vaddr", Attrs(), [Target(pid=1)], [])])
    # the same kdamond as pydamon's own, off and empty: staged in and emptied again
    before = tree_files(kernel.root)
    owned = probe(str(kernel.root), io=kernel, owned={0}, stage=True)
    assert owned.inspected and "intervals_goal" in [k for k, v in owned.files.items() if v]
    assert tree_files(kernel.root) == before


def test_no_damon_sysfs(tmp_path: Path) -> None:
    caps = probe(str(tmp_path), stage=True)
    assert not caps.sysfs and not caps.inspected
    assert missing_features(caps, []) == [
        (f"the DAMON sysfs interface ({tmp_path}/kdamonds)", "5.18")
    ]


@pytest.mark.parametrize(
    ("layout", "ops", "scheme", "expected"),
    [
        (LINUX_6_1, "fvaddr", Scheme(action=Action.LRU_PRIO), []),
        (
            LINUX_6_1,
            "vaddr",
            Scheme(action=Action.MIGRATE_COLD, target_nid=0),
            [
                ("the DAMOS action migrate_cold", "6.11"),
                ("DAMOS migration target node (target_nid)", "6.11"),
            ],
        ),
        (LINUX_6_12, "paddr", Scheme(filters=[Filter(FilterType.YOUNG)]), []),
        (
            LINUX_6_12,
            "paddr",
            Scheme(filters=[Filter(FilterType.UNMAPPED), Filter(FilterType.ACTIVE)]),
            [("the DAMOS filter type unmapped", "6.15"), ("the DAMOS filter type active", "6.15")],
        ),
        (LINUX_7_1, "paddr", Scheme(filters=[Filter(FilterType.UNMAPPED, allow=True)]), []),
    ],
)
def test_missing_features_name_each_piece_and_its_release(
    tmp_path: Path,
    layout: Layout,
    ops: str,
    scheme: Scheme,
    expected: list[tuple[str, str]],
) -> None:
    kernel = fake_kernel(tmp_path, layout)
    caps = probe(str(kernel.root), io=kernel, stage=True)
    target = Target(pid=1) if ops != "paddr" else Target(ranges=[(0, 4096)])
    ctx = ContextConfig(ops, Attrs(), [target], [scheme])
    assert missing_features(caps, [ctx]) == expected
    if expected:
        with pytest.raises(KernelFeatureMissing) as err:
            require(caps, [ctx])
        assert err.value.missing == expected
        assert "\n" not in str(err.value)
    else:
        require(caps, [ctx])


def test_intervals_goal_only_counts_when_enabled(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_12)
    caps = probe(str(kernel.root), io=kernel, stage=True)
    off = ContextConfig("vaddr", Attrs(intervals_goal=IntervalsGoal(400, 0, 0, 0)), [], [])
    on = ContextConfig("vaddr", Attrs(intervals_goal=IntervalsGoal(400, 3, 1000, 10_000)), [], [])
    assert missing_features(caps, [off]) == []
    assert missing_features(caps, [on]) == [
        ("monitoring intervals auto-tuning (intervals_goal)", "6.15")
    ]


def test_the_default_probe_only_reads_even_with_no_kdamond(tmp_path: Path) -> None:
    # `pydamon features` probes this way: it must never write a kernel's DAMON tree
    kernel = fake_kernel(tmp_path, LINUX_6_12)
    writes: list[str] = []
    real_write = kernel.write
    kernel.write = lambda path, value: writes.append(path) or real_write(path, value)  # type: ignore[method-assign]
    caps = probe(str(kernel.root), io=kernel)
    assert writes == []
    assert caps.sysfs and not caps.inspected and caps.probed_by == "no kdamond to inspect"
    assert probe(str(kernel.root), io=kernel, stage=True).inspected and writes  # opt-in only
