"""The address spans a record monitored: the union of its regions, split at big holes.

vaddr records (heap, mmap area, stack) fall into a few such spans; heatmaps lay them end to end
so the holes between them take no columns.
"""

from __future__ import annotations

import numpy as np

from pydamon.record.model import Record
from pydamon.report.passes import keep_freed_memory


def contiguous_spans(starts: np.ndarray, ends: np.ndarray, gap_ratio: float = 0.05) -> np.ndarray:
    """Split the union of regions into spans separated by big holes; returns [[start, end], ..].

    A hole is "big" if it is larger than ``gap_ratio`` of the union's size.
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
    """The contiguous span with the most accessed bytes (``report heatmap --draw_range
    hottest``)."""
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
