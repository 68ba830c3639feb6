"""Numbers reports show, computed from a :class:`~pydamon.record.Record`'s columns with numpy.

Everything here is vectorized over all regions of all snapshots (no per-snapshot Python loop), so
a record of an hour with a thousand regions per snapshot is summarized in a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pydamon.record.model import UNKNOWN, Record

#: Percentiles the wss/footprints/nr_regions tables show by default (damo's).
DEFAULT_PERCENTILES = (0, 25, 50, 75, 100)


def per_snapshot_sum(rec: Record, values: np.ndarray) -> np.ndarray:
    """Sum of a per-region array within each snapshot."""
    if not rec.nr_snapshots:
        return np.zeros(0, np.int64)
    return np.bincount(rec.region_snapshot, weights=values, minlength=rec.nr_snapshots)


def wss_bytes(rec: Record, min_access_rate: float = 0.0) -> np.ndarray:
    """Working set size of each snapshot: bytes of regions accessed at all (damo's definition)
    or, with ``min_access_rate`` > 0, at least at that access rate (0..1)."""
    if min_access_rate > 0:
        max_nr = rec.max_nr_accesses[rec.region_snapshot]
        accessed = rec.nr_accesses >= np.ceil(min_access_rate * max_nr)
        accessed &= rec.nr_accesses > 0
    else:
        accessed = rec.nr_accesses > 0
    return per_snapshot_sum(rec, np.where(accessed, rec.sizes, 0)).astype(np.int64)


def total_bytes(rec: Record) -> np.ndarray:
    return per_snapshot_sum(rec, rec.sizes).astype(np.int64)


def percentile_table(
    values: np.ndarray, percentiles: tuple[int, ...] | list[int] = DEFAULT_PERCENTILES
) -> list[tuple[int, int]]:
    """(percentile, value) rows; the value at p is the p-th percentile with the 'lower' rule
    damo uses (an actual observed value, never an interpolation)."""
    if not len(values):
        return []
    ordered = np.sort(values)
    out = []
    for p in percentiles:
        idx = min(int(len(ordered) * p / 100), len(ordered) - 1)
        out.append((int(p), int(ordered[idx])))
    return out


def footprint_columns(rec: Record) -> dict[str, np.ndarray]:
    """Footprint columns with UNKNOWN entries dropped per column."""
    out: dict[str, np.ndarray] = {}
    for name in ("rss_bytes", "vsz_bytes", "sys_free_bytes"):
        col = getattr(rec, name)
        out[name] = col[col != UNKNOWN]
    used = rec.sys_total_bytes - rec.sys_free_bytes
    known = (rec.sys_total_bytes != UNKNOWN) & (rec.sys_free_bytes != UNKNOWN)
    out["sys_used_bytes"] = used[known]
    return out


def temperature(rec: Record, weights: tuple[int, int] = (100, 100)) -> np.ndarray:
    """damo-style temperature of each region: access rate (percent) times a weight plus age
    (aggregation intervals) times a weight, where the age counts negative for idle regions
    (the longer idle, the colder)."""
    max_nr = rec.max_nr_accesses[rec.region_snapshot]
    pct = rec.nr_accesses * 100 / max_nr
    signed_age = np.where(rec.nr_accesses > 0, rec.age, -rec.age)
    return pct * weights[0] + signed_age * weights[1]


@dataclass
class TimeRange:
    start_us: int
    end_us: int

    @property
    def duration_us(self) -> int:
        return self.end_us - self.start_us


def pattern_times(
    rec: Record,
    *,
    min_size: int = 0,
    max_size: int | None = None,
    min_access_rate: float = 0.0,
    max_access_rate: float = 1.0,
    min_age_us: int = 0,
    max_age_us: int | None = None,
    address_range: tuple[int, int] | None = None,
) -> list[TimeRange]:
    """Time ranges during which at least one region matched the pattern (damo ``report times``).

    Consecutive snapshots with a match are joined into one range.
    """
    if not rec.nr_snapshots:
        return []
    snap = rec.region_snapshot
    sizes = rec.sizes
    rate = rec.nr_accesses / rec.max_nr_accesses[snap]
    age_us = rec.age * rec.snap_aggr_us[snap]
    match = (sizes >= min_size) & (rate >= min_access_rate) & (rate <= max_access_rate)
    match &= age_us >= min_age_us
    if max_size is not None:
        match &= sizes <= max_size
    if max_age_us is not None:
        match &= age_us <= max_age_us
    if address_range is not None:
        match &= (rec.starts < address_range[1]) & (rec.ends > address_range[0])
    hit = np.bincount(snap[match], minlength=rec.nr_snapshots) > 0
    order = np.argsort(rec.snap_end_us, kind="stable")
    ranges: list[TimeRange] = []
    for i in order.tolist():
        if not hit[i]:
            continue
        s, e = int(rec.snap_start_us[i]), int(rec.snap_end_us[i])
        if ranges and s <= ranges[-1].end_us:
            ranges[-1].end_us = max(ranges[-1].end_us, e)
        else:
            ranges.append(TimeRange(s, e))
    return ranges


def contiguous_spans(starts: np.ndarray, ends: np.ndarray, gap_ratio: float = 0.05) -> np.ndarray:
    """Split the union of regions into spans separated by big holes; returns [[start, end], ..].

    A hole is "big" if it is larger than ``gap_ratio`` of the union's size; vaddr records (heap,
    mmap area, stack) fall into a few such spans. Same rule as the terminal heatmap's
    ``monitored_spans``.
    """
    if not len(starts):
        return np.zeros((0, 2), np.int64)
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    run_end = np.maximum.accumulate(e)
    holes = s[1:] - run_end[:-1]
    union = int(run_end[-1] - s[0]) - int(np.maximum(holes, 0).sum())
    cut = np.nonzero(holes > max(union * gap_ratio, 0))[0]
    bounds_lo = np.concatenate([[s[0]], s[cut + 1]])
    bounds_hi = np.concatenate([run_end[cut], [run_end[-1]]])
    return np.stack([bounds_lo, bounds_hi], axis=1).astype(np.int64)


def hottest_span(rec: Record) -> tuple[int, int]:
    """The contiguous span with the most accessed bytes (default address range of heatmaps)."""
    spans = contiguous_spans(rec.starts, rec.ends)
    if not len(spans):
        return (0, 0)
    if len(spans) == 1:
        return int(spans[0, 0]), int(spans[0, 1])
    weight = rec.nr_accesses * rec.sizes
    mids = (rec.starts + rec.ends) // 2
    which = np.searchsorted(spans[:, 0], mids, side="right") - 1
    heat = np.bincount(which, weights=weight, minlength=len(spans))
    best = int(np.argmax(heat)) if heat.any() else int(np.argmax(spans[:, 1] - spans[:, 0]))
    return int(spans[best, 0]), int(spans[best, 1])


def heat_grid(
    rec: Record,
    *,
    time_range: tuple[int, int] | None = None,
    address_range: tuple[int, int] | None = None,
    spans: list[tuple[int, int]] | None = None,
    time_bins: int = 40,
    address_bins: int = 80,
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Average access rate (0..1) over (time, address) cells; NaN in rows without snapshots.

    The address axis is ``spans`` laid end to end (holes between them take no columns);
    by default the record's :func:`contiguous_spans`, clipped to ``address_range`` if given.
    Returns ``(grid[time_bins, address_bins], time_edges_us, spans)``. Each region adds its
    access rate weighted by the bytes of each cell it covers; a time row is the mean of the
    snapshots whose middle falls in it. Vectorized with bincount and a difference array: a few
    passes over the regions, no per-snapshot Python loop.
    """
    if time_range is None:
        time_range = (int(rec.snap_start_us.min()), int(rec.snap_end_us.max()))
    if spans is None:
        spans = [(int(a), int(b)) for a, b in contiguous_spans(rec.starts, rec.ends)]
    if address_range is not None:
        lo, hi = address_range
        spans = [(max(a, lo), min(b, hi)) for a, b in spans if a < hi and b > lo] or [(lo, hi)]
    t0, t1 = time_range
    t1 = max(t1, t0 + 1)
    nt, na = int(time_bins), int(address_bins)
    time_edges = np.linspace(t0, t1, nt + 1)
    grid = np.zeros((nt, na))
    total = sum(b - a for a, b in spans)
    if not rec.nr_snapshots or not total:
        return np.full((nt, na), np.nan), time_edges, spans
    span_lo = np.array([a for a, _ in spans], np.int64)
    span_hi = np.array([b for _, b in spans], np.int64)
    span_v0 = np.concatenate([[0], np.cumsum(span_hi - span_lo)[:-1]])

    # rows of snapshots (by the middle of their aggregation), and how many each row averages
    mid_us = (rec.snap_start_us + rec.snap_end_us) // 2
    snap_row = ((mid_us - t0) * nt // (t1 - t0)).astype(np.int64)
    snap_row = np.where(mid_us == t1, nt - 1, snap_row)
    snap_in = (snap_row >= 0) & (snap_row < nt)
    rows_count = np.bincount(snap_row[snap_in], minlength=nt).astype(float)

    # regions on the collapsed address axis (a region lies within one span)
    snap = rec.region_snapshot
    k = np.searchsorted(span_lo, rec.starts, side="right") - 1
    k_ok = np.clip(k, 0, len(spans) - 1)
    s = np.maximum(rec.starts, span_lo[k_ok])
    e = np.minimum(rec.ends, span_hi[k_ok])
    keep = (k >= 0) & (e > s) & snap_in[snap]
    s = (s[keep] - span_lo[k_ok[keep]] + span_v0[k_ok[keep]]).astype(np.float64)
    e = (e[keep] - span_lo[k_ok[keep]] + span_v0[k_ok[keep]]).astype(np.float64)
    rsnap = snap[keep]
    rate = rec.nr_accesses[keep] / rec.max_nr_accesses[rsnap]
    row = snap_row[rsnap]
    width = total / na
    c0 = np.minimum((s / width).astype(np.int64), na - 1)
    c1 = np.minimum((e / width).astype(np.int64), na - 1)
    # bytes-weighted sums into cells: partial first cell, partial last cell, full middle cells
    first_cov = np.where(c1 > c0, (c0 + 1) * width - s, e - s)
    acc = np.bincount(row * na + c0, weights=rate * first_cov, minlength=nt * na)
    last = c1 > c0
    last_cov = e[last] - c1[last] * width
    acc += np.bincount(row[last] * na + c1[last], weights=rate[last] * last_cov, minlength=nt * na)
    full = c1 > c0 + 1
    diff = np.bincount(
        row[full] * (na + 1) + c0[full] + 1, weights=rate[full] * width, minlength=nt * (na + 1)
    )
    diff -= np.bincount(
        row[full] * (na + 1) + c1[full], weights=rate[full] * width, minlength=nt * (na + 1)
    )
    middle = np.cumsum(diff.reshape(nt, na + 1), axis=1)[:, :na]
    grid = (acc.reshape(nt, na) + middle) / width
    with np.errstate(invalid="ignore", divide="ignore"):
        grid = np.where(rows_count[:, None] > 0, grid / rows_count[:, None], np.nan)
    return grid, time_edges, spans
