"""Access heatmaps of a record: a time x address grid of access rates.

:func:`heatmap` turns a :class:`~pydamon.record.Record` (one target) into a :class:`Heatmap`:
rows are time bins, columns address bins, cells the byte-weighted mean access rate
(``nr_accesses / max_nr_accesses``, 0..1) of the regions covering them. Big unmonitored holes of
the address space (between heap, mmap areas and stack) are collapsed so the columns cover only
monitored memory (:mod:`pydamon.report.spans`). A row averages its snapshots: each counts in the
row holding the middle of its aggregation (``time_weight="middle"``, what ``pydamon report
heatmap`` draws) or in every row it overlaps, weighted by the overlap (``"overlap"``, what
``pydamon demo`` draws). :class:`HeatGrid` accumulates the grid a range of snapshots at a time,
vectorized with bincount and a difference array (no per-snapshot Python loop), so records of
hours render quickly. The text and image forms are in :mod:`pydamon.report.render`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pydamon.record.model import Record
from pydamon.report.passes import keep_freed_memory
from pydamon.report.spans import record_spans

FloatArray = npt.NDArray[np.float64]
TIME_WEIGHTS = ("middle", "overlap")


@dataclass
class Heatmap:
    """Mean access rate per (time bin, address bin); NaN where no snapshot covers a row."""

    grid: FloatArray
    time_edges_us: FloatArray
    #: Address bins are defined on the collapsed axis; ``spans`` maps it back to addresses.
    spans: list[tuple[int, int]]
    #: Bytes of monitored address space each column covers.
    bytes_per_column: float

    @property
    def time_bins(self) -> int:
        return int(self.grid.shape[0])

    @property
    def address_bins(self) -> int:
        return int(self.grid.shape[1])

    @property
    def span_bytes(self) -> int:
        return sum(e - s for s, e in self.spans)

    def column_address(self, column: int) -> int:
        """Start address of a column."""
        offset = column * self.bytes_per_column
        for s, e in self.spans:
            if offset < e - s:
                return int(s + offset)
            offset -= e - s
        return self.spans[-1][1] if self.spans else 0

    def span_columns(self) -> list[int]:
        """First column of each span (where a collapsed gap lies just left of it)."""
        out = []
        offset = 0
        for s, e in self.spans:
            out.append(int(offset / self.bytes_per_column) if self.bytes_per_column else 0)
            offset += e - s
        return out


#: Cells a heatmap may have (its grids take ~24 bytes a cell): 2048 x 2048, far beyond any
#: screen or image, where a typo like ``--resol 100000 100000`` would ask for 74 GiB.
MAX_CELLS = 1 << 22


def check_resolution(time_bins: int, address_bins: int) -> None:
    """A ValueError unless the grid has 1..:data:`MAX_CELLS` cells."""
    if time_bins < 1 or address_bins < 1:
        raise ValueError("a heatmap needs at least one time bin and one address bin")
    if time_bins * address_bins > MAX_CELLS:
        raise ValueError(
            f"a heatmap of {time_bins} x {address_bins} cells is too big: at most {MAX_CELLS} "
            "cells (e.g. 2048 x 2048)"
        )


def heatmap(
    rec: Record,
    *,
    time_bins: int = 20,
    address_bins: int = 80,
    time_range: tuple[int, int] | None = None,
    address_range: tuple[int, int] | None = None,
    collapse_gaps: bool = True,
    gap_ratio: float = 0.05,
    time_weight: str = "middle",
) -> Heatmap:
    """The time x address grid of access rates of a record's snapshots (of one target).

    ``time_range`` defaults to the record's; the address axis is the record's spans (with
    ``collapse_gaps``, split at holes bigger than ``gap_ratio`` of the monitored size; else one
    span from the lowest to the highest address), clipped to ``address_range`` if given.
    """
    check_resolution(time_bins, address_bins)
    if time_range is None:
        has = rec.nr_snapshots > 0
        time_range = (int(rec.snap_start_us.min()), int(rec.snap_end_us.max())) if has else (0, 1)
    if collapse_gaps:
        spans = [(int(a), int(b)) for a, b in record_spans(rec, gap_ratio)]
    else:
        starts, ends = rec.runs()
        spans = [(int(starts.min()), int(ends.max()))] if len(starts) else []
    grid = HeatGrid(time_range, spans, time_bins, address_bins, address_range, time_weight)
    grid.add(rec)
    return Heatmap(grid.result(), grid.time_edges, grid.spans, grid.total / address_bins)


class HeatGrid:
    """Accumulates a :func:`heatmap` grid block by block (records too big to load at once)."""

    def __init__(
        self,
        time_range: tuple[int, int],
        spans: list[tuple[int, int]],
        time_bins: int,
        address_bins: int,
        address_range: tuple[int, int] | None = None,
        time_weight: str = "middle",
    ) -> None:
        keep_freed_memory()
        if time_weight not in TIME_WEIGHTS:
            raise ValueError(f"unknown time weight {time_weight!r}; use middle or overlap")
        self.time_weight = time_weight
        if address_range is not None:
            lo, hi = address_range
            spans = [(max(a, lo), min(b, hi)) for a, b in spans if a < hi and b > lo] or [(lo, hi)]
        self.spans = spans
        self.t0, t1 = time_range
        self.t1 = max(t1, self.t0 + 1)
        check_resolution(int(time_bins), int(address_bins))
        self.nt, self.na = int(time_bins), int(address_bins)
        self.time_edges = np.linspace(self.t0, self.t1, self.nt + 1)
        self.total = sum(b - a for a, b in spans)
        self.acc = np.zeros(self.nt * self.na)
        self.diff = np.zeros(self.nt * (self.na + 1))
        #: Snapshots (or overlap weights) each row averages.
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
            part = rec.slice(lo, hi)
            if self.time_weight == "middle":
                regions = self._by_middle(part)
            else:
                regions = self._by_overlap(part)
            if regions is not None:
                self._accumulate(*regions)

    def _by_middle(self, rec: Record) -> _Regions | None:
        """The accessed regions, each in the row holding its snapshot's middle."""
        nt, t0, t1 = self.nt, self.t0, self.t1
        counts = rec.nr_regions
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
            return None
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
        return starts, ends, rate, row, region_in

    def _by_overlap(self, rec: Record) -> _Regions | None:
        """The accessed regions once for each row their snapshot overlaps, their rates weighted
        by the overlap; a snapshot of no duration counts fully in its row."""
        nt, edges = self.nt, self.time_edges
        begin, end = rec.snap_start_us, rec.snap_end_us
        weight = np.minimum(edges[1:], end[:, None]) - np.maximum(edges[:-1], begin[:, None])
        weight = np.clip(weight, 0, None)
        instant = np.flatnonzero(end <= begin)
        if len(instant):
            at = end[instant]
            row_of = np.clip(np.searchsorted(edges, at, "right") - 1, 0, nt - 1)
            weight[instant] = 0.0
            inside = (at >= self.t0) & (at <= self.t1)
            weight[instant[inside], row_of[inside]] = 1.0
        pair_snap, pair_row = np.nonzero(weight)  # snapshot by snapshot, rows in order
        pair_weight = weight[pair_snap, pair_row]
        self.rows_count += np.bincount(pair_row, weights=pair_weight, minlength=nt)
        counts = rec.nr_regions[pair_snap]
        firsts = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts, out=firsts[1:])
        take = np.repeat(rec.region_offsets[pair_snap] - firsts[:-1], counts)
        take += np.arange(int(firsts[-1]))
        pair_of = np.repeat(np.arange(len(counts)), counts)
        nr = rec.narrow_counts("nr_accesses")[take]
        hot = np.flatnonzero(nr != 0)
        if not len(hot):
            return None
        take, pair_of = take[hot], pair_of[hot]
        snap_of = pair_snap[pair_of]
        rate = nr[hot] / rec.max_nr_accesses[snap_of] * pair_weight[pair_of]
        return rec.starts[take], rec.ends[take], rate, pair_row[pair_of], None

    def _accumulate(
        self,
        starts: np.ndarray,
        ends: np.ndarray,
        rate: np.ndarray,
        row: np.ndarray,
        region_in: np.ndarray | None,
    ) -> None:
        """Add each region's rate, weighted by the bytes of each cell of its row it covers."""
        nt, na = self.nt, self.na
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

    def result(self) -> FloatArray:
        nt, na = self.nt, self.na
        if not self.total:
            return np.full((nt, na), np.nan)
        middle = np.cumsum(self.diff.reshape(nt, na + 1), axis=1)[:, :na]
        grid = (self.acc.reshape(nt, na) + middle) / (self.total / na)
        counts = self.rows_count[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            out: FloatArray = np.where(counts > 0, grid / counts, np.nan)
        return out


#: What the row rules hand to the accumulation: starts, ends, rates and rows of the regions,
#: and which of them count (None: all).
_Regions = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]
