"""When an access pattern was present in a record (damo's ``report times``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pydamon.record.model import Record


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
