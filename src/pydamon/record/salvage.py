"""Reading what is readable of a damaged version 2 record (``read_record(..., verify=True)``).

Every column segment's checksum is checked; the snapshots with a value in a damaged segment
(of any column) are left out and each damaged segment is listed as a
:class:`pydamon.record.model.Damage` with the snapshots it cost. Only a damaged ``nr_regions``
column loses the whole record (where each snapshot's regions are is then unknown). The kept
snapshots are decoded into memory (the damaged file cannot be mapped as one record).
"""

from __future__ import annotations

import numpy as np

from pydamon.record import blocks as blk
from pydamon.record.columnar import OPTIONAL_SNAP_COLUMNS, SNAP_COLUMNS, MappedColumn
from pydamon.record.model import Damage, Record, RecordError


def damaged_snapshots(
    path: str, cols: dict[int, MappedColumn]
) -> tuple[np.ndarray, list[tuple[int, int, str, np.ndarray]]]:
    """(mask of the snapshots with a value in a damaged segment, [(first byte, end byte,
    column, mask of its snapshots)]), checking every column's segments."""
    nr_col = cols[blk.COL_NR_REGIONS]
    lost = nr_col.bad_values()
    if lost:
        raise RecordError(
            f"{path}: corrupted nr_regions column at byte {lost[0][2]} (checksum mismatch): "
            "where each snapshot's regions are cannot be known; the record cannot be read"
        )
    counts = nr_col.array.astype(np.int64)
    n = len(counts)
    if n and int(counts.min()) < 0:
        raise RecordError(f"{path}: nr_regions column holds a negative count")
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    m = int(offsets[-1])
    bad = np.zeros(n, bool)
    found: list[tuple[int, int, str, np.ndarray]] = []

    def mark(lo: int, hi: int, pos: int, col: MappedColumn, per_region: bool) -> None:
        this = np.zeros(n, bool)
        if per_region:  # snapshots whose regions overlap lo..hi
            a = int(np.searchsorted(offsets, lo, "right")) - 1
            b = int(np.searchsorted(offsets, max(hi, lo + 1) - 1, "right"))
            this[max(a, 0) : min(b, n)] = True
        else:
            this[lo:hi] = True
        bad[:] |= this
        end = min(pos + col.segment_bytes, col.data_pos + len(col.raw))
        found.append((pos, end, f"corrupted {col.name} column", this))

    for col_id, _ in SNAP_COLUMNS + OPTIONAL_SNAP_COLUMNS:
        if col_id not in cols:
            continue  # an optional column an older writer did not write
        for lo, hi, pos in cols[col_id].bad_values():
            mark(lo, hi, pos, cols[col_id], False)
    for col_id in (blk.COL_SIZE, blk.COL_NR_ACCESSES, blk.COL_AGE):
        for lo, hi, pos in cols[col_id].bad_values():
            mark(lo, hi, pos, cols[col_id], True)
    gi, gv = cols[blk.COL_GAP_INDEX], cols[blk.COL_GAP_VALUE]
    if gi.count == gv.count:
        good = np.ones(gi.count, bool)
        for col in (gi, gv):
            for lo, hi, pos in col.bad_values():
                good[lo:hi] = False
                # the regions between the good gap entries around the damaged ones
                idx = gi.array
                prev = np.nonzero(good[:lo])[0]
                nxt = np.nonzero(good[hi:])[0]
                r0 = int(idx[prev[-1]]) if len(prev) else 0
                r1 = int(idx[hi + nxt[0]]) + 1 if len(nxt) else m
                mark(min(max(r0, 0), m), min(max(r1, 0), m), pos, col, True)
        if not good.all():
            # the store's gaps leave the damaged entries out (their regions are dropped)
            gi.keep = good
            gv.keep = good
    return bad, found


def without(
    rec: Record,
    bad: np.ndarray,
    found: list[tuple[int, int, str, np.ndarray]],
) -> Record:
    """The snapshots of ``rec`` that ``bad`` does not mark, decoded into memory."""
    keep = ~bad
    # runs of kept snapshots, each decoded alone (its segments are all good)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], keep.astype(np.int8), [0]))))
    parts = []
    for a, b in zip(edges[::2].tolist(), edges[1::2].tolist()):
        part = rec.slice(a, b)
        parts.append(
            Record(
                meta=rec.meta, targets=rec.targets, snap_target=part.snap_target,
                snap_start_us=part.snap_start_us, snap_end_us=part.snap_end_us,
                snap_sample_us=part.snap_sample_us, snap_aggr_us=part.snap_aggr_us,
                rss_bytes=part.rss_bytes, vsz_bytes=part.vsz_bytes,
                sys_free_bytes=part.sys_free_bytes, sys_total_bytes=part.sys_total_bytes,
                region_offsets=part.region_offsets, starts=part.starts, ends=part.ends,
                nr_accesses=part.nr_accesses, age=part.age,
                snap_nr_samples=part.snap_nr_samples, snap_window_us=part.snap_window_us,
            )
        )  # fmt: skip
    out = Record.concatenate(parts, meta=rec.meta) if parts else rec.select(keep)
    kept_before = np.concatenate(([0], np.cumsum(keep)))
    origin = int(rec.snap_start_us[keep].min()) if keep.any() else 0
    for first, end, what, mask in found:
        idx = np.flatnonzero(mask)
        i0, i1 = int(idx[0]), int(idx[-1]) + 1
        out.damage.append(
            Damage(first, end, what, int(kept_before[i0]), int(mask.sum()),
                   int(rec.snap_start_us[i0]) - origin, int(rec.snap_end_us[i1 - 1]) - origin)
        )  # fmt: skip
    return out
