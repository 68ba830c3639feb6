"""Access heatmaps from snapshots: a time x address grid of access rates, and its terminal form.

:func:`heatmap` turns a list of :class:`~pydamon.core.snapshot.Snapshot` (one target) into a
:class:`Heatmap`: rows are time bins, columns address bins, cells the byte- and time-weighted
mean access rate (``nr_accesses / max_nr_accesses``, 0..1) of the regions covering them. Big
unmonitored holes of the address space (between heap, mmap areas and stack) are collapsed so the
columns cover only monitored memory. :func:`render_heatmap` prints it as damo's ``report
heatmap`` does: one digit 0-9 per cell (optionally ANSI-coloured) and a ``#`` footer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pydamon.core.snapshot import Snapshot
from pydamon.units import format_bytes
from pydamon.units import format_duration_us as format_time_us

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: 256-colour background codes per digit, dark to bright ("flame").
FLAME_COLORS = (16, 52, 88, 124, 160, 196, 202, 208, 214, 226)
GRAY_COLORS = (232, 234, 236, 238, 241, 244, 247, 250, 253, 255)


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


def monitored_spans(
    snapshots: Sequence[Snapshot], gap_ratio: float = 0.05
) -> list[tuple[int, int]]:
    """The union of all regions, split at holes bigger than ``gap_ratio`` of its total size."""
    if not snapshots:
        return []
    starts = np.concatenate([s.starts for s in snapshots])
    ends = np.concatenate([s.ends for s in snapshots])
    if not len(starts):
        return []
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    run_end = np.maximum.accumulate(e)
    holes = s[1:] - run_end[:-1]
    covered = int(np.maximum(e - s, 0).sum())
    # the union's size, for the threshold (regions of many snapshots overlap)
    union = int(run_end[-1] - s[0]) - int(np.maximum(holes, 0).sum())
    cut = np.flatnonzero(holes > max(min(covered, union) * gap_ratio, 0))
    lo = np.concatenate([[s[0]], s[cut + 1]])
    hi = np.concatenate([run_end[cut], [run_end[-1]]])
    return [(int(a), int(b)) for a, b in zip(lo, hi)]


def _clip_spans(spans: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    return [(max(s, lo), min(e, hi)) for s, e in spans if s < hi and e > lo]


def heatmap(
    snapshots: Sequence[Snapshot],
    *,
    time_bins: int = 20,
    address_bins: int = 80,
    time_range: tuple[int, int] | None = None,
    address_range: tuple[int, int] | None = None,
    collapse_gaps: bool = True,
    gap_ratio: float = 0.05,
) -> Heatmap:
    """Build the time x address grid of access rates of one target's snapshots.

    ``time_range``/``address_range`` default to everything the snapshots cover. With
    ``collapse_gaps`` holes bigger than ``gap_ratio`` of the monitored size take no columns.
    """
    if time_bins < 1 or address_bins < 1:
        raise ValueError("a heatmap needs at least one time bin and one address bin")
    snaps = [s for s in snapshots if s.nr_regions]
    if time_range is None:
        if snaps:
            time_range = (min(s.start_us for s in snaps), max(s.end_us for s in snaps))
        else:
            time_range = (0, 1)
    t0, t1 = time_range
    t1 = max(t1, t0 + 1)
    if collapse_gaps:
        spans = monitored_spans(snaps, gap_ratio)
    elif snaps:
        spans = [(min(int(s.starts[0]) for s in snaps), max(int(s.ends[-1]) for s in snaps))]
    else:
        spans = []
    if address_range is not None:
        spans = _clip_spans(spans, *address_range) if spans else [address_range]
    total = sum(e - s for s, e in spans)
    time_edges = np.linspace(t0, t1, time_bins + 1)
    grid = np.zeros((time_bins, address_bins))
    weight = np.zeros(time_bins)
    if not total:
        return Heatmap(np.full((time_bins, address_bins), np.nan), time_edges, spans, 0.0)

    span_lo = np.array([s for s, _ in spans], np.int64)
    span_hi = np.array([e for _, e in spans], np.int64)
    span_v0 = np.concatenate([[0], np.cumsum(span_hi - span_lo)[:-1]])
    col_edges = np.linspace(0.0, float(total), address_bins + 1)

    for snap in snaps:
        # time weight of this snapshot in each row
        overlap = np.clip(
            np.minimum(time_edges[1:], snap.end_us) - np.maximum(time_edges[:-1], snap.start_us),
            0,
            None,
        )
        if snap.end_us <= snap.start_us:
            # an instantaneous snapshot counts fully in its row
            row = int(
                np.clip(np.searchsorted(time_edges, snap.end_us, "right") - 1, 0, time_bins - 1)
            )
            overlap = np.zeros(time_bins)
            if t0 <= snap.end_us <= t1:
                overlap[row] = 1.0
        if not overlap.any():
            continue
        cols = _column_rates(snap, span_lo, span_hi, span_v0, col_edges)
        grid += overlap[:, None] * cols[None, :]
        weight += overlap
    with np.errstate(invalid="ignore", divide="ignore"):
        grid = np.where(weight[:, None] > 0, grid / weight[:, None], np.nan)
    return Heatmap(grid, time_edges, spans, total / address_bins)


def _column_rates(
    snap: Snapshot,
    span_lo: IntArray,
    span_hi: IntArray,
    span_v0: IntArray,
    col_edges: FloatArray,
) -> FloatArray:
    """Mean access rate of a snapshot's regions over each column of the collapsed axis."""
    rate = snap.access_rate
    # clip regions to the spans and move them onto the collapsed axis
    si = np.searchsorted(span_lo, snap.starts, side="right") - 1
    si = np.clip(si, 0, len(span_lo) - 1)
    s = np.maximum(snap.starts, span_lo[si])
    e = np.minimum(snap.ends, span_hi[si])
    keep = e > s
    vs = (s[keep] - span_lo[si[keep]] + span_v0[si[keep]]).astype(np.float64)
    ve = (e[keep] - span_lo[si[keep]] + span_v0[si[keep]]).astype(np.float64)
    r = rate[keep]
    if not len(vs):
        return np.zeros(len(col_edges) - 1)
    order = np.argsort(vs, kind="stable")
    vs, ve, r = vs[order], ve[order], r[order]
    cum = np.concatenate([[0.0], np.cumsum((ve - vs) * r)])
    # integral of the rate from 0 to each column edge (holes between regions count as 0)
    i = np.searchsorted(vs, col_edges, side="right") - 1
    ic = np.clip(i, 0, len(vs) - 1)
    partial = (np.minimum(col_edges, ve[ic]) - vs[ic]) * r[ic]
    integral = np.where(i >= 0, cum[ic] + np.maximum(partial, 0.0), 0.0)
    widths = np.diff(col_edges)
    return np.diff(integral) / widths


def heat_digits(grid: FloatArray, scale: str = "absolute") -> npt.NDArray[np.int64]:
    """0-9 per cell (-1 where NaN). ``absolute``: rate 0 -> 0, rate 1 -> 9; ``relative``: the
    grid's minimum -> 0 and maximum -> 9 (damo's)."""
    g = np.asarray(grid, dtype=np.float64)
    valid = ~np.isnan(g)
    if scale == "relative" and valid.any():
        lo, hi = float(g[valid].min()), float(g[valid].max())
        norm = (g - lo) / (hi - lo) if hi > lo else np.zeros_like(g)
    elif scale in ("absolute", "relative"):
        norm = g
    else:
        raise ValueError(f"unknown heat scale {scale!r}; use absolute or relative")
    digits = np.floor(np.clip(np.nan_to_num(norm), 0.0, 1.0) * 9 + 0.5).astype(np.int64)
    return np.where(valid, digits, -1)


def heatmap_lines(
    hm: Heatmap, *, color: bool = False, colorset: str = "flame", scale: str = "absolute"
) -> list[str]:
    """The grid as text rows (time goes down), one character per cell, without the footer."""
    digits = heat_digits(hm.grid, scale)
    palette = GRAY_COLORS if colorset == "gray" else FLAME_COLORS
    lines = []
    for row in digits.tolist():
        if color:
            cells = [
                " " if d < 0 else f"\x1b[48;5;{palette[d]}m\x1b[38;5;{15 if d < 6 else 16}m{d}"
                for d in row
            ]
            lines.append("".join(cells) + "\x1b[0m")
        else:
            lines.append("".join(" " if d < 0 else str(d) for d in row))
    return lines


def heatmap_footer(hm: Heatmap, scale: str = "absolute") -> list[str]:
    t0, t1 = float(hm.time_edges_us[0]), float(hm.time_edges_us[-1])
    if hm.spans:
        lo, hi = hm.spans[0][0], hm.spans[-1][1]
        space = f"{lo:#x}-{hi:#x}: {format_bytes(hm.span_bytes)}"
        if len(hm.spans) > 1:
            space += f" in {len(hm.spans)} spans, gaps between them collapsed"
    else:
        space = "nothing monitored"
    heat = "access rate 0%..100%" if scale == "absolute" else "relative to this map's min..max"
    return [
        f"# access_frequency: 0123456789 ({heat})",
        f"# x-axis: space ({space})",
        f"# y-axis: time ({t0:.0f}-{t1:.0f} us: {format_time_us(t1 - t0)})",
        f"# resolution: {hm.address_bins}x{hm.time_bins} "
        f"({format_bytes(hm.bytes_per_column)} and "
        f"{format_time_us((t1 - t0) / max(hm.time_bins, 1))} for each character)",
    ]


def render_heatmap(
    hm: Heatmap,
    *,
    color: bool = False,
    colorset: str = "flame",
    scale: str = "absolute",
    footer: bool = True,
) -> str:
    """damo's terminal heatmap: digit rows, then the ``#`` footer."""
    lines = heatmap_lines(hm, color=color, colorset=colorset, scale=scale)
    if footer:
        lines += heatmap_footer(hm, scale)
    return "\n".join(lines)
