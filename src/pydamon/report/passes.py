"""Helpers of the passes reports make over a :class:`~pydamon.record.Record`'s columns."""

from __future__ import annotations

import numpy as np

from pydamon.record.model import Record

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


def sum_per_snapshot(rec: Record, values: np.ndarray) -> np.ndarray:
    """int64 sums of a per-region array (any integer dtype) within each snapshot of ``rec``."""
    # reduceat only at snapshots with regions: an empty snapshot's offset equals the next one's
    # (or the end), which would cut its predecessor's sum short
    counts = rec.nr_regions
    out = np.zeros(rec.nr_snapshots, np.int64)
    has = counts > 0
    if has.any():
        out[has] = np.add.reduceat(values, rec.region_offsets[:-1][has], dtype=np.int64)
    return out
