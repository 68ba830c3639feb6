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

_malloc_tuned = False


def keep_freed_memory() -> None:
    """Let glibc reuse freed memory for the next chunk's temporaries instead of unmapping it.

    Passes over a record allocate numpy temporaries of a few MiB per chunk; by default glibc
    serves those with fresh mmaps (or trims the heap after each), so every chunk pays a page
    fault per 4 KiB: on an hour of snapshots that was more system time (~1.5 M faults) than the
    arithmetic. Raising the mmap and trim thresholds keeps up to 128 MiB of freed heap for
    reuse. Process-wide, once; a no-op without glibc.
    """
    global _malloc_tuned
    if _malloc_tuned:
        return
    _malloc_tuned = True
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 128 << 20)


def per_snapshot_sum(rec: Record, values: np.ndarray) -> np.ndarray:
    """Sum of a per-region array within each snapshot."""
    if not rec.nr_snapshots:
        return np.zeros(0, np.int64)
    if not len(values):
        return np.zeros(rec.nr_snapshots, values.dtype)
    return _segment_sums(rec, values, values.dtype)


def _segment_sums(rec: Record, values: np.ndarray, dtype: np.dtype | type) -> np.ndarray:
    # reduceat only at snapshots with regions: an empty snapshot's offset equals the next one's
    # (or the end), which would cut its predecessor's sum short
    counts = rec.nr_regions
    out = np.zeros(rec.nr_snapshots, dtype)
    has = counts > 0
    if has.any():
        out[has] = np.add.reduceat(values, rec.region_offsets[:-1][has], dtype=dtype)
    return out


def _sum_per_snapshot(part: Record, values: np.ndarray) -> np.ndarray:
    """int64 sums of a per-region array (any integer dtype) within each snapshot of ``part``."""
    return _segment_sums(part, values, np.int64)


def wss_bytes(rec: Record, min_access_rate: float = 0.0) -> np.ndarray:
    """Working set size of each snapshot: bytes of regions accessed at all (damo's definition)
    or, with ``min_access_rate`` > 0, at least at that access rate (0..1).

    Works a cache-sized range of snapshots at a time on the stored (narrow) sizes and counts,
    so a record of hours needs no int64 copy of its regions."""
    keep_freed_memory()
    out = np.zeros(rec.nr_snapshots, np.int64)
    for lo, hi in rec.chunk_bounds():
        part = rec.slice(lo, hi)
        nr = part.narrow_counts("nr_accesses")
        accessed = nr > 0
        if min_access_rate > 0:
            need = np.ceil(min_access_rate * part.max_nr_accesses)
            accessed &= nr >= np.repeat(need, part.nr_regions)
        units, shift = part.size_units()
        out[lo:hi] = _sum_per_snapshot(part, np.where(accessed, units, 0)) << shift
    return out


def total_bytes(rec: Record) -> np.ndarray:
    out = np.zeros(rec.nr_snapshots, np.int64)
    for lo, hi in rec.chunk_bounds():
        part = rec.slice(lo, hi)
        units, shift = part.size_units()
        out[lo:hi] = _sum_per_snapshot(part, units) << shift
    return out


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
    age = rec.age.astype(np.float64)
    signed_age = np.where(rec.nr_accesses > 0, age, -age)
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
    hit = np.zeros(rec.nr_snapshots, bool)
    for lo, hi in rec.chunk_bounds():  # a range of snapshots at a time: no whole-record copies
        part = rec.slice(lo, hi)
        snap = part.region_snapshot
        sizes = part.sizes
        rate = part.nr_accesses / part.max_nr_accesses[snap]
        age_us = part.age * part.snap_aggr_us[snap]
        match = (sizes >= min_size) & (rate >= min_access_rate) & (rate <= max_access_rate)
        match &= age_us >= min_age_us
        if max_size is not None:
            match &= sizes <= max_size
        if max_age_us is not None:
            match &= age_us <= max_age_us
        if address_range is not None:
            match &= (part.starts < address_range[1]) & (part.ends > address_range[0])
        hit[lo:hi] = np.bincount(snap[match], minlength=part.nr_snapshots) > 0
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


def contiguous_spans(
    starts: np.ndarray,
    ends: np.ndarray,
    gap_ratio: float = 0.05,
    region_offsets: np.ndarray | None = None,
) -> np.ndarray:
    """Split the union of regions into spans separated by big holes; returns [[start, end], ..].

    A hole is "big" if it is larger than ``gap_ratio`` of the union's size; vaddr records (heap,
    mmap area, stack) fall into a few such spans. Same rule as the terminal heatmap's
    ``monitored_spans``. With ``region_offsets`` (snapshots of address-sorted regions) only the
    runs of adjacent regions are sorted, not every region: a few per snapshot.
    """
    if not len(starts):
        return np.zeros((0, 2), np.int64)
    if region_offsets is not None and len(starts) > 1:
        new_snap = np.zeros(len(starts), bool)
        new_snap[region_offsets[:-1][region_offsets[:-1] < len(starts)]] = True
        ordered = np.all((starts[1:] >= ends[:-1]) | new_snap[1:])
        if ordered:
            run_start = new_snap.copy()
            run_start[1:] |= starts[1:] != ends[:-1]
            run_start[0] = True
            idx = np.nonzero(run_start)[0]
            starts = starts[idx]
            ends = np.maximum.reduceat(ends, idx)
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    run_end = np.maximum.accumulate(e)
    holes = s[1:] - run_end[:-1]
    union = int(run_end[-1] - s[0]) - int(np.maximum(holes, 0).sum())
    cut = np.nonzero(holes > max(union * gap_ratio, 0))[0]
    bounds_lo = np.concatenate([[s[0]], s[cut + 1]])
    bounds_hi = np.concatenate([run_end[cut], [run_end[-1]]])
    return np.stack([bounds_lo, bounds_hi], axis=1).astype(np.int64)


def record_spans(rec: Record, gap_ratio: float = 0.05) -> np.ndarray:
    """:func:`contiguous_spans` of all regions of a record, a range of snapshots at a time."""
    keep_freed_memory()
    if rec.is_lazy:
        runs = [rec.runs()]  # from the stored sizes and gaps, without decoding positions
    else:
        runs = [rec.slice(lo, hi).runs() for lo, hi in rec.chunk_bounds()]
    if not runs:
        return np.zeros((0, 2), np.int64)
    starts = np.concatenate([r[0] for r in runs])
    ends = np.concatenate([r[1] for r in runs])
    return contiguous_spans(starts, ends, gap_ratio)


def hottest_span(rec: Record) -> tuple[int, int]:
    """The contiguous span with the most accessed bytes (default address range of heatmaps)."""
    spans = record_spans(rec)
    if not len(spans):
        return (0, 0)
    if len(spans) == 1:
        return int(spans[0, 0]), int(spans[0, 1])
    heat = np.zeros(len(spans))
    for lo, hi in rec.chunk_bounds():
        part = rec.slice(lo, hi)
        weight = part.nr_accesses * (part.ends - part.starts)
        mids = (part.starts + part.ends) // 2
        which = np.searchsorted(spans[:, 0], mids, side="right") - 1
        heat += np.bincount(which, weights=weight, minlength=len(spans))
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
        spans = [(int(a), int(b)) for a, b in record_spans(rec)]
    grid = HeatGrid(time_range, spans, time_bins, address_bins, address_range)
    grid.add(rec)
    return grid.result(), grid.time_edges, grid.spans


class HeatGrid:
    """Accumulates :func:`heat_grid` block by block (records too big to load at once)."""

    def __init__(
        self,
        time_range: tuple[int, int],
        spans: list[tuple[int, int]],
        time_bins: int,
        address_bins: int,
        address_range: tuple[int, int] | None = None,
    ) -> None:
        keep_freed_memory()
        if address_range is not None:
            lo, hi = address_range
            spans = [(max(a, lo), min(b, hi)) for a, b in spans if a < hi and b > lo] or [(lo, hi)]
        self.spans = spans
        self.t0, t1 = time_range
        self.t1 = max(t1, self.t0 + 1)
        self.nt, self.na = int(time_bins), int(address_bins)
        self.time_edges = np.linspace(self.t0, self.t1, self.nt + 1)
        self.total = sum(b - a for a, b in spans)
        self.acc = np.zeros(self.nt * self.na)
        self.diff = np.zeros(self.nt * (self.na + 1))
        self.rows_count = np.zeros(self.nt)
        self.span_lo = np.array([a for a, _ in spans], np.int64)
        self.span_hi = np.array([b for _, b in spans], np.int64)
        self.span_v0 = np.concatenate([[0], np.cumsum(self.span_hi - self.span_lo)[:-1]])
        self.span_shift = (self.span_v0 - self.span_lo).astype(np.int64)

    def add(self, rec: Record) -> None:
        """Add a record's snapshots (in pieces of ~256k regions, to stay in the CPU caches)."""
        if not rec.nr_snapshots or not self.total:
            return
        for lo, hi in rec.chunk_bounds():
            self._add(rec.slice(lo, hi))

    def _add(self, rec: Record) -> None:
        nt, na, t0, t1 = self.nt, self.na, self.t0, self.t1
        counts = rec.nr_regions
        # rows of snapshots (by the middle of their aggregation), and how many each row averages
        mid_us = (rec.snap_start_us + rec.snap_end_us) // 2
        snap_row = ((mid_us - t0) * nt // (t1 - t0)).astype(np.int64)
        snap_row = np.where(mid_us == t1, nt - 1, snap_row)
        snap_in = (snap_row >= 0) & (snap_row < nt)
        self.rows_count += np.bincount(snap_row[snap_in], minlength=nt)
        # Regions never accessed add 0 to every cell: leave them out (the sums stay the same,
        # bit for bit); most regions of real records are idle.
        nr = rec.narrow_counts("nr_accesses")
        inv_max = 1.0 / rec.max_nr_accesses
        starts, ends = rec.starts, rec.ends
        accessed = nr != 0
        nr_hot = int(np.count_nonzero(accessed))
        if not nr_hot:
            return
        if nr_hot > len(nr) * 0.6:
            # gathering would cost more than it saves; spread per-snapshot values with repeat
            row = np.repeat(snap_row, counts)
            rate = nr * np.repeat(inv_max, counts)
            region_in = np.repeat(snap_in, counts) if not snap_in.all() else None
        else:
            hot = np.flatnonzero(accessed)
            snap_of = np.repeat(np.arange(len(counts), dtype=np.int32), counts)[hot]
            row = snap_row[snap_of]
            rate = nr[hot] * inv_max[snap_of]
            region_in = snap_in[snap_of] if not snap_in.all() else None
            starts, ends = starts[hot], ends[hot]

        # regions on the collapsed address axis (a region lies within one span)
        if len(self.spans) == 1:
            lo, hi = int(self.span_lo[0]), int(self.span_hi[0])
            s = np.maximum(starts, lo) - lo
            e = np.minimum(ends, hi) - lo
            keep = e > s
        else:
            k = np.searchsorted(self.span_lo, starts, side="right") - 1
            # a region starts at or above its span's start (k >= 0), so no clip at the bottom;
            # those below every span (k = -1) are dropped by ``keep``
            shift = np.take(self.span_shift, k, mode="clip")
            s = starts + shift
            e = np.minimum(ends, np.take(self.span_hi, k, mode="clip"))
            e += shift
            keep = k >= 0
            keep &= e > s
        if region_in is not None:
            keep &= region_in
        if not keep.all():
            s, e, rate, row = s[keep], e[keep], rate[keep], row[keep]
        width = self.total / na
        sf = s / width
        ef = e / width
        c0 = sf.astype(np.int64)
        np.minimum(c0, na - 1, out=c0)
        c1 = ef.astype(np.int64)
        np.minimum(c1, na - 1, out=c1)
        # bytes-weighted sums (in units of cells): partial first cell, partial last, full middle
        same = c1 == c0
        # (the same IEEE operations as where(same, ef - sf, (c0 + 1) - sf), one pass less)
        first_cov = np.where(same, ef, c0 + 1.0)
        first_cov -= sf
        first_cov *= rate
        base = row * na
        cell = base + c0
        self.acc += np.bincount(cell, weights=first_cov, minlength=nt * na) * width
        last = np.flatnonzero(~same)
        if len(last):
            # regions over more than one cell (a few): gathered once by index
            c0_l, c1_l, rate_l, row_l = c0[last], c1[last], rate[last], row[last]
            last_cov = ef[last] - c1_l
            self.acc += (
                np.bincount(base[last] + c1_l, weights=rate_l * last_cov, minlength=nt * na) * width
            )
            full = np.flatnonzero(c1_l > c0_l + 1)
            if len(full):
                w_full = rate_l[full] * width
                size = nt * (na + 1)
                rbase = row_l[full] * (na + 1)
                self.diff += np.bincount(rbase + c0_l[full] + 1, w_full, minlength=size)
                self.diff -= np.bincount(rbase + c1_l[full], w_full, minlength=size)

    def result(self) -> np.ndarray:
        nt, na = self.nt, self.na
        if not self.total:
            return np.full((nt, na), np.nan)
        middle = np.cumsum(self.diff.reshape(nt, na + 1), axis=1)[:, :na]
        grid = (self.acc.reshape(nt, na) + middle) / (self.total / na)
        counts = self.rows_count[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, grid / counts, np.nan)
