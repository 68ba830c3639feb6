"""Heatmaps of records of hand-made snapshots, checked against hand-computed grids."""

from __future__ import annotations

import numpy as np
import pytest

from pydamon.core import Snapshot
from pydamon.record import Record
from pydamon.report import format_bytes, heat_digits, record_spans, render_heatmap
from pydamon.report import heatmap as record_heatmap
from pydamon.report.heatmap import Heatmap

K = 4096


def snap(t0: int, t1: int, regions: list[tuple[int, int, int]], max_nr: int = 20) -> Snapshot:
    """Regions as (start, end, nr_accesses); sampling 5 ms, aggregation max_nr * 5 ms."""
    return Snapshot(
        target_index=0,
        target_id=None,
        start_us=t0,
        end_us=t1,
        sample_interval_us=5000,
        aggr_interval_us=5000 * max_nr,
        starts=np.array([r[0] for r in regions], np.int64),
        ends=np.array([r[1] for r in regions], np.int64),
        nr_accesses=np.array([r[2] for r in regions], np.int64),
        age=np.zeros(len(regions), np.int64),
    )


def heatmap(snaps: list[Snapshot], **kw) -> Heatmap:
    return record_heatmap(Record.from_snapshots(snaps), **kw)


def spans(snaps: list[Snapshot], gap_ratio: float) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in record_spans(Record.from_snapshots(snaps), gap_ratio)]


def test_grid_is_byte_and_time_weighted_mean_rate():
    # [0, 4K) at 100% then 0%; [4K, 8K) at 50% then 100%
    snaps = [
        snap(0, 100, [(0, K, 20), (K, 2 * K, 10)]),
        snap(100, 200, [(0, K, 0), (K, 2 * K, 20)]),
    ]
    hm = heatmap(snaps, time_bins=2, address_bins=2)
    assert hm.grid.tolist() == [[1.0, 0.5], [0.0, 1.0]]
    # one column over both pages; one row over both snapshots
    hm1 = heatmap(snaps, time_bins=1, address_bins=1)
    assert hm1.grid.tolist() == [[(1.0 + 0.5 + 0.0 + 1.0) / 4]]
    # columns cutting a region in quarters: 3 columns over 2 pages
    hm3 = heatmap(snaps[:1], time_bins=1, address_bins=3)
    assert hm3.grid[0] == pytest.approx([1.0, (0.5 * 1.0 + 0.5 * 0.5), 0.5])


def test_rows_without_snapshots_are_nan_and_blank():
    snaps = [snap(0, 100, [(0, K, 20)]), snap(300, 400, [(0, K, 20)])]
    hm = heatmap(snaps, time_bins=4, address_bins=1)
    assert np.isnan(hm.grid[1, 0]) and np.isnan(hm.grid[2, 0])
    lines = render_heatmap(hm, footer=False).splitlines()
    assert lines == ["9", " ", " ", "9"]


def test_big_gaps_are_collapsed_small_holes_are_not():
    far = 1 << 40
    s = snap(0, 100, [(0, 4 * K, 20), (5 * K, 8 * K, 0), (far, far + 8 * K, 10)])
    # the one-page hole is 1/15 of the monitored bytes: below a 10% ratio, above a 5% one
    assert spans([s], gap_ratio=0.1) == [(0, 8 * K), (far, far + 8 * K)]
    assert len(spans([s], gap_ratio=0.05)) == 3
    hm = heatmap([s], time_bins=1, address_bins=4, gap_ratio=0.1)
    # 16 KiB of columns: the first span (with its one-page hole counting as idle), then the far one
    assert hm.span_bytes == 16 * K and hm.bytes_per_column == 4 * K
    assert hm.grid[0].tolist() == [1.0, 0.0, 0.5, 0.5]
    assert hm.span_columns() == [0, 2]
    assert hm.column_address(2) == far
    flat = heatmap([s], time_bins=1, address_bins=4, collapse_gaps=False)
    assert flat.span_bytes == far + 8 * K  # one span; the hot pages all fall in column 0
    assert flat.grid[0, 1:3].tolist() == [0.0, 0.0] and 0 < flat.grid[0, 3] < 1e-6


def test_ranges_restrict_the_map():
    snaps = [snap(0, 100, [(0, K, 20), (K, 2 * K, 0)]), snap(100, 200, [(0, 2 * K, 10)])]
    hm = heatmap(snaps, time_bins=1, address_bins=1, address_range=(K, 2 * K), time_range=(0, 100))
    assert hm.grid.tolist() == [[0.0]]


def test_digits_absolute_and_relative():
    g = np.array([[0.0, 0.5, 1.0, np.nan], [0.2, 0.3, 0.4, 0.1]])
    assert heat_digits(g).tolist() == [[0, 5, 9, -1], [2, 3, 4, 1]]
    assert heat_digits(g, "relative").tolist() == [[0, 5, 9, -1], [2, 3, 4, 1]]
    g2 = np.array([[0.1, 0.2]])
    assert heat_digits(g2, "relative").tolist() == [[0, 9]]
    with pytest.raises(ValueError, match="absolute or relative"):
        heat_digits(g2, "log")


def test_render_has_damo_footer_and_optional_colour():
    snaps = [snap(0, 1_000_000, [(0, 80 * K, 20)]), snap(1_000_000, 2_000_000, [(0, 80 * K, 0)])]
    hm = heatmap(snaps, time_bins=2, address_bins=8)
    text = render_heatmap(hm)
    lines = text.splitlines()
    assert lines[:2] == ["9" * 8, "0" * 8]
    assert lines[2].startswith("# access_frequency: 0123456789")
    assert lines[3].startswith("# x-axis: space (0x0-0x50000: 320.000 KiB")
    assert lines[4] == "# y-axis: time (0-2000000 us: 2.000 s)"
    assert lines[5] == "# resolution: 8x2 (40.000 KiB and 1.000 s for each character)"
    coloured = render_heatmap(hm, color=True, footer=False)
    assert "\x1b[48;5;" in coloured and coloured.count("\x1b[0m") == 2


def test_empty_and_bad_input():
    hm = heatmap([], time_bins=2, address_bins=3)
    assert hm.spans == [] and hm.bytes_per_column == 0.0
    assert np.isnan(hm.grid).all()
    assert "nothing monitored" in render_heatmap(hm)
    with pytest.raises(ValueError):
        heatmap([], time_bins=0)


def test_format_bytes():
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.500 KiB"
    assert format_bytes(3 << 30) == "3.000 GiB"


def test_rows_average_snapshots_by_middle_or_by_overlap():
    # 0..150 us at 100%, 150..300 us idle; two rows of 150 us; then a snapshot over both rows
    snaps = [snap(0, 100, [(0, K, 20)]), snap(100, 200, [(0, K, 20)]), snap(200, 300, [(0, K, 0)])]
    by_middle = heatmap(snaps, time_bins=2, address_bins=1)
    assert by_middle.grid.tolist() == [[1.0], [0.5]]  # middles at 50, 150 and 250 us
    by_overlap = heatmap(snaps, time_bins=2, address_bins=1, time_weight="overlap")
    # row 1: 50 us of the second snapshot at 100%, 100 us of the third idle
    assert by_overlap.grid[:, 0] == pytest.approx([1.0, 50 / 150])
    # a snapshot of no duration counts fully in its row, by either rule
    instant = [snap(0, 0, [(0, K, 10)]), snap(300, 300, [(0, K, 20)])]
    for rule in ("middle", "overlap"):
        hm = heatmap(instant, time_bins=3, address_bins=1, time_weight=rule)
        assert hm.grid[0, 0] == 0.5 and hm.grid[2, 0] == 1.0 and np.isnan(hm.grid[1, 0])
    with pytest.raises(ValueError, match="middle or overlap"):
        heatmap(snaps, time_weight="mean")
