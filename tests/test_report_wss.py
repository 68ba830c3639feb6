"""Working set size from hand-made snapshots."""

from __future__ import annotations

import numpy as np
import pytest

from pydamon.core import Snapshot
from pydamon.report import percentiles_of, render_wss, snapshot_wss, wss_series, wss_stats

K = 4096


def snap(nr: list[int], sizes: list[int]) -> Snapshot:
    ends = np.cumsum(sizes)
    return Snapshot(
        0, None, 0, 100_000, 5000, 100_000,
        ends - np.array(sizes), ends, np.array(nr), np.zeros(len(nr), np.int64),
    )  # fmt: skip


def test_wss_is_bytes_of_accessed_regions():
    s = snap([0, 3, 1, 0], [K, 2 * K, 4 * K, 8 * K])
    assert snapshot_wss(s) == 6 * K
    assert snapshot_wss(s, min_nr_accesses=2) == 2 * K
    assert snapshot_wss(s, min_nr_accesses=0) == 6 * K  # "accessed at all" is the floor


def test_percentiles_use_damos_rule():
    # 5 values: p25 -> index int(5 * 0.25) = 1, p50 -> 2, p75 -> 3, p100 -> last
    assert percentiles_of([50, 10, 40, 20, 30]) == [
        (0, 10),
        (25, 20),
        (50, 30),
        (75, 40),
        (100, 50),
    ]
    assert percentiles_of([7]) == [(p, 7) for p in (0, 25, 50, 75, 100)]
    assert percentiles_of([]) == []
    with pytest.raises(ValueError):
        percentiles_of([1], [101])


def test_stats_and_table():
    snaps = [
        snap([1, 0], [K, K]),
        snap([1, 1], [K, K]),
        snap([0, 0], [K, K]),
        snap([2, 0], [K, 3 * K]),
    ]
    assert wss_series(snaps).tolist() == [K, 2 * K, 0, K]
    st = wss_stats(snaps)
    assert st.avg == pytest.approx(K)
    assert st.nr_snapshots == 4
    assert st.percentiles == [(0, 0), (25, K), (50, K), (75, 2 * K), (100, 2 * K)]
    table = render_wss(st, bar_width=10).splitlines()
    assert table[0] == "# <percentile> <wss>"
    assert table[1] == "# avg\t4.000 KiB"
    assert table[2].startswith("  0\t") and table[2].endswith("|          |")
    assert table[-1].endswith("|**********|")
    assert table[3].endswith("|*****     |")
