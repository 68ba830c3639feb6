"""The regions of one snapshot with their access rate, age and temperature (damo's ``report
access``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pydamon.record.model import Record

#: Orders of ``report access --sort_regions_by``: a key of a region row (hottest first).
REGION_ORDERS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "address": lambda r: r["start"],
    "access_rate": lambda r: -r["nr_accesses"],
    "age": lambda r: -r["age_aggrs"],
    "size": lambda r: -r["size"],
    "temperature": lambda r: -r["temperature"],
}


def temperature(rec: Record, weights: tuple[int, int] = (100, 100)) -> np.ndarray:
    """damo-style temperature of each region: access rate (percent) times a weight plus age
    (aggregation intervals) times a weight, where the age counts negative for idle regions
    (the longer idle, the colder)."""
    max_nr = rec.max_nr_accesses[rec.region_snapshot]
    pct = rec.nr_accesses * 100 / max_nr
    age = rec.age.astype(np.float64)
    signed_age = np.where(rec.nr_accesses > 0, age, -age)
    return pct * weights[0] + signed_age * weights[1]


def snapshot_access(rec: Record, i: int) -> dict[str, Any]:
    """Snapshot ``i`` of ``rec`` and one row a region (JSON-ready)."""
    snap = rec.snapshot(i)
    max_nr = snap.max_nr_accesses
    sub = rec.select(np.arange(rec.nr_snapshots) == i)
    temps = temperature(sub)
    regions = [
        {
            "start": int(s),
            "end": int(e),
            "size": int(e - s),
            "nr_accesses": int(n),
            "access_rate_percent": round(int(n) * 100 / max_nr, 2),
            "age_aggrs": int(a),
            "age_us": int(a) * snap.aggr_interval_us,
            "temperature": float(t),
        }
        for s, e, n, a, t in zip(snap.starts, snap.ends, snap.nr_accesses, snap.age, temps)
    ]
    return {
        "snapshot": i,
        "target_index": snap.target_index,
        "target_id": snap.target_id,
        "start_us": snap.start_us,
        "end_us": snap.end_us,
        "sample_interval_us": snap.sample_interval_us,
        "aggr_interval_us": snap.aggr_interval_us,
        "total_bytes": snap.total_bytes,
        "regions": regions,
    }


def sort_regions(
    regions: list[dict[str, Any]], by: str, top: int | None = None
) -> list[dict[str, Any]]:
    """Region rows in one of the :data:`REGION_ORDERS`, only the first ``top`` if given."""
    ordered = sorted(regions, key=REGION_ORDERS[by])
    return ordered[:top] if top else ordered


def temperature_summary(regions: list[dict[str, Any]]) -> dict[str, float]:
    """Temperature at each byte-weighted percentile (0, 25, 50, 75, 100) of region rows."""
    if not regions:
        return {}
    temps = np.asarray([r["temperature"] for r in regions])
    sizes = np.asarray([r["size"] for r in regions])
    order = np.argsort(temps)
    cum = np.cumsum(sizes[order]) / max(sizes.sum(), 1)
    out = {}
    for p in (0, 25, 50, 75, 100):
        k = min(int(np.searchsorted(cum, p / 100)), len(order) - 1)
        out[str(p)] = float(temps[order[k]])
    return out


def hot_bytes(regions: list[dict[str, Any]]) -> tuple[int, int]:
    """(bytes of the accessed regions (temperature above 0), bytes of all regions)."""
    hot = sum(r["size"] for r in regions if r["temperature"] > 0)
    return int(hot), int(sum(r["size"] for r in regions))


def heat_string(regions: list[dict[str, Any]], width: int = 80) -> str:
    """A 1-D heatmap line of the snapshot (damo's first line of ``report access``)."""
    if not regions:
        return ""
    lo, hi = regions[0]["start"], max(r["end"] for r in regions)
    if hi <= lo:
        return ""
    cells = np.zeros(width)
    for r in regions:
        c0 = int((r["start"] - lo) * width // (hi - lo))
        c1 = max(int((r["end"] - lo) * width // (hi - lo)), c0 + 1)
        cells[c0:c1] = np.maximum(cells[c0:c1], r["access_rate_percent"])
    top = cells.max() or 1
    return "".join(str(min(int(c / top * 10), 9)) for c in cells)
