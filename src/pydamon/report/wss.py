"""Working set size of a record's snapshots (damo's ``report wss``).

The working set of a snapshot is the bytes of its regions accessed at all in the aggregation
(``nr_accesses > 0``) or, with ``min_access_rate`` > 0, at least at that access rate (0..1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pydamon.record.model import Record
from pydamon.report.passes import keep_freed_memory, sum_per_snapshot
from pydamon.report.percentiles import DEFAULT_PERCENTILES, percentiles_of


def wss_bytes(rec: Record, min_access_rate: float = 0.0) -> np.ndarray:
    """Working set size of each snapshot, in the record's order.

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
        out[lo:hi] = sum_per_snapshot(part, np.where(accessed, units, 0)) << shift
    return out


def total_bytes(rec: Record) -> np.ndarray:
    """Bytes of all regions of each snapshot."""
    out = np.zeros(rec.nr_snapshots, np.int64)
    for lo, hi in rec.chunk_bounds():
        part = rec.slice(lo, hi)
        units, shift = part.size_units()
        out[lo:hi] = sum_per_snapshot(part, units) << shift
    return out


def target_wss(
    rec: Record, target_index: int, min_access_rate: float = 0.0, exclude_samples: int = 0
) -> np.ndarray:
    """:func:`wss_bytes` of one target's snapshots, without its first ``exclude_samples``."""
    return wss_bytes(rec.for_target(target_index), min_access_rate)[exclude_samples:]


@dataclass
class WssStats:
    """Percentiles (``(percentile, bytes)``) and average of a working-set-size series."""

    percentiles: list[tuple[int, int]]
    avg: float
    nr_snapshots: int


def wss_stats(
    rec: Record,
    percentiles: Sequence[int] = DEFAULT_PERCENTILES,
    min_access_rate: float = 0.0,
) -> WssStats:
    series = wss_bytes(rec, min_access_rate)
    avg = float(series.mean()) if len(series) else 0.0
    return WssStats(percentiles_of(series, percentiles), avg, len(series))
