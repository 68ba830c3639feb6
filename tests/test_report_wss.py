"""Working set size of records of hand-made snapshots, and damo's percentiles."""

from __future__ import annotations

import numpy as np
import pytest

from pydamon.core import Snapshot
from pydamon.record import Record
from pydamon.report import distribution, percentiles_of, render_wss, wss_bytes, wss_stats
from pydamon.report.percentiles import percentile_range

K = 4096


def snap(nr: list[int], sizes: list[int]) -> Snapshot:
    ends = np.cumsum(sizes)
    return Snapshot(
        0, None, 0, 100_000, 5000, 100_000,
        ends - np.array(sizes), ends, np.array(nr), np.zeros(len(nr), np.int64),
    )  # fmt: skip


def test_wss_is_bytes_of_accessed_regions():
    rec = Record.from_snapshots([snap([0, 3, 1, 0], [K, 2 * K, 4 * K, 8 * K])])
    assert wss_bytes(rec).tolist() == [6 * K]
    # 20 samples an aggregation: 10% needs 2 of them
    assert wss_bytes(rec, min_access_rate=0.1).tolist() == [2 * K]
    assert wss_bytes(rec, min_access_rate=0.0).tolist() == [6 * K]  # "accessed at all"


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
    rec = Record.from_snapshots(snaps)
    assert wss_bytes(rec).tolist() == [K, 2 * K, 0, K]
    st = wss_stats(rec)
    assert st.avg == pytest.approx(K)
    assert st.nr_snapshots == 4
    assert st.percentiles == [(0, 0), (25, K), (50, K), (75, 2 * K), (100, 2 * K)]
    table = render_wss(st, bar_width=10).splitlines()
    assert table[0] == "# <percentile> <wss>"
    assert table[1] == "# avg\t4.000 KiB"
    assert table[2].startswith("  0\t") and table[2].endswith("|          |")
    assert table[-1].endswith("|**********|")
    assert table[3].endswith("|*****     |")


def test_distribution_by_size_or_by_time():
    values = np.array([50, 10, 40, 20, 30])
    by_size = distribution(values, [0, 50, 100])
    assert by_size is not None and by_size.average == 30.0
    assert by_size.rows == [(0, 10), (50, 30), (100, 50)]
    by_time = distribution(values, [0, 50, 100], sortby="time")  # the values in run order
    assert by_time is not None and by_time.rows == [(0, 50), (50, 40), (100, 30)]
    assert distribution(np.zeros(0, np.int64)) is None
    with pytest.raises(ValueError, match="size or time"):
        distribution(values, sortby="address")


def test_percentile_range():
    assert percentile_range(0, 101, 25) == [0, 25, 50, 75, 100]
    for bad in ((50, 10, 5), (0, 102, 1), (0, 101, 0), (-1, 50, 10)):
        with pytest.raises(ValueError, match="START < STOP <= 101"):
            percentile_range(*bad)
