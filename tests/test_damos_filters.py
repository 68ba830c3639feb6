"""Ops-layer filter rules over page facts, and the metric readers."""

from __future__ import annotations

import numpy as np
import pytest

from pydamon.damos import Filter, FilterType, ManualMetrics, Scheme, SystemMetrics
from pydamon.damos.filters import (
    FilterUnsupported,
    PageFacts,
    ops_filters_pass,
    passing_ranges,
    set_filters_default_reject,
)
from pydamon.damos.metrics import parse_meminfo, parse_psi_some_total_us

T, F = True, False


def facts() -> PageFacts:
    # 6 pages: present except the last; anon pages 0-2; active 0, 3; young 1, 4
    return PageFacts(
        present=np.array([T, T, T, T, T, F]),
        anon=np.array([T, T, T, F, F, F]),
        active=np.array([T, F, F, T, F, F]),
        young=np.array([F, T, F, F, T, F]),
        memcg_ino=np.array([7, 7, 8, 8, 0, 0]),
        folio_size=np.array([2 << 20, 2 << 20, 4096, 4096, 4096, 4096]),
        unmapped=np.array([F, F, F, F, T, F]),
    )


def passing(filters: list[Filter]) -> list[int]:
    s = Scheme(filters=filters)
    set_filters_default_reject(s)
    return np.flatnonzero(ops_filters_pass(s, facts(), {"/a": 7, "/b": 8})).tolist()


def test_no_filters_pass_every_present_page():
    assert passing([]) == [0, 1, 2, 3, 4]


def test_single_filters_and_defaults():
    # reject anon: the rest pass by default (last filter rejects -> default allow)
    assert passing([Filter(FilterType.ANON)]) == [3, 4]
    # allow anon: the rest are rejected by default
    assert passing([Filter(FilterType.ANON, allow=True)]) == [0, 1, 2]
    # matching=False inverts what matches
    assert passing([Filter(FilterType.ANON, matching=False, allow=True)]) == [3, 4]
    assert passing([Filter(FilterType.YOUNG)]) == [0, 2, 3]
    assert passing([Filter(FilterType.ACTIVE, allow=True)]) == [0, 3]
    assert passing([Filter(FilterType.MEMCG, allow=True, memcg_path="/b")]) == [2, 3]
    assert passing(
        [Filter(FilterType.HUGEPAGE_SIZE, allow=True, min_sz=2 << 20, max_sz=2 << 20)]
    ) == [0, 1]
    assert passing([Filter(FilterType.UNMAPPED)]) == [0, 1, 2, 3]


def test_first_match_decides():
    # allow young first, then reject anon: young anon page 1 is allowed; other anon rejected;
    # non-anon pages match nothing -> default = opposite of last (reject) = allow
    assert passing([Filter(FilterType.YOUNG, allow=True), Filter(FilterType.ANON)]) == [1, 3, 4]
    # the other order: anon rejected first, then young allowed; default reject
    assert passing([Filter(FilterType.ANON), Filter(FilterType.YOUNG, allow=True)]) == [4]


def test_core_allowed_regions_are_allowed_by_ops_filters():
    s = Scheme(filters=[Filter(FilterType.ANON)])
    set_filters_default_reject(s)
    s.core_filters_allowed = True
    assert np.flatnonzero(ops_filters_pass(s, facts())).tolist() == [0, 1, 2, 3, 4]


def test_default_reject_flags():
    s = Scheme(filters=[Filter(FilterType.ADDR, allow=True, addr_end=4096)])
    set_filters_default_reject(s)
    assert s.core_filters_default_reject and not s.ops_filters_default_reject
    s = Scheme(
        filters=[
            Filter(FilterType.ADDR, allow=True, addr_end=4096),
            Filter(FilterType.ANON, allow=True),
        ]
    )
    set_filters_default_reject(s)
    # with ops filters, the core group lets unmatched regions through to them
    assert not s.core_filters_default_reject and s.ops_filters_default_reject


def test_missing_facts_raise_a_clear_error():
    s = Scheme(filters=[Filter(FilterType.YOUNG)])
    with pytest.raises(FilterUnsupported, match="young filter needs page information"):
        ops_filters_pass(s, PageFacts(present=np.array([T])))


def test_memcg_filters_need_their_cgroups_resolved():
    s = Scheme(filters=[Filter(FilterType.MEMCG, memcg_path="/c")])
    with pytest.raises(FilterUnsupported, match="cgroup '/c' was not resolved"):
        ops_filters_pass(s, facts(), {"/a": 7})


def test_passing_ranges():
    mask = np.array([T, T, F, T, F, F, T])
    assert passing_ranges(0x10000, mask) == [
        (0x10000, 0x12000),
        (0x13000, 0x14000),
        (0x16000, 0x17000),
    ]
    assert passing_ranges(0, np.array([], bool)) == []


# -- metrics --------------------------------------------------------------------------------------


def test_system_metrics_from_a_proc_tree(tmp_path):
    (tmp_path / "proc/pressure").mkdir(parents=True)
    (tmp_path / "proc/meminfo").write_text(
        "MemTotal:       1000000 kB\nMemFree:         250000 kB\nActive:  300000 kB\n"
        "Inactive:  100000 kB\n"
    )
    (tmp_path / "proc/pressure/memory").write_text(
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=123456\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=999\n"
    )
    node = tmp_path / "sys/devices/system/node/node1"
    node.mkdir(parents=True)
    (node / "meminfo").write_text("Node 1 MemTotal: 400000 kB\nNode 1 MemFree: 100000 kB\n")
    cg = tmp_path / "sys/fs/cgroup/work"
    cg.mkdir(parents=True)
    (cg / "memory.numa_stat").write_text(
        "anon N0=0 N1=40960000\nfile N0=0 N1=1\nactive_anon N0=0 N1=20480000\n"
        "inactive_anon N0=0 N1=20480000\nactive_file N0=0 N1=0\ninactive_file N0=0 N1=0\n"
    )
    m = SystemMetrics(root=str(tmp_path))
    assert m.free_mem_rate_permil() == 250
    assert m.some_mem_psi_total_us() == 123456
    assert m.node_mem_bp(None, used=True) == 7500
    assert m.node_mem_bp(1, used=False) == 2500
    assert m.node_mem_bp(5, used=True) == 0 and m.node_mem_bp(5, used=False) == 10000
    # 40960000 bytes = 40000 kB of 400000 kB on node 1
    assert m.node_memcg_bp(1, "/work", used=True) == 1000
    assert m.node_memcg_bp(1, "/work", used=False) == 9000
    assert m.node_memcg_bp(1, "/nope", used=True) == 0
    assert m.lru_mem_bp(active=True) == 7500 and m.lru_mem_bp(active=False) == 2500


def test_system_metrics_of_this_machine():
    m = SystemMetrics()
    rate = m.free_mem_rate_permil()
    assert rate is not None and 0 <= rate <= 1000
    assert 0 <= m.node_mem_bp(None, used=True) <= 10000
    assert 0 <= m.lru_mem_bp(active=True) <= 10000


def test_parsers_and_manual_metrics():
    assert parse_meminfo("MemTotal: 10 kB\nbogus\nX: y kB\n") == {"MemTotal": 10}
    assert parse_psi_some_total_us("full total=3\n") is None
    m = ManualMetrics(free_mem_permil=420, node_used_bp={0: 6000})
    assert m.free_mem_rate_permil() == 420 and m.node_mem_bp(0, used=False) == 4000
