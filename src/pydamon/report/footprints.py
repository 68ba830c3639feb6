"""Memory footprints of a record's snapshots (damo's ``report footprints``): the target's RSS
and VSZ and the system's used memory, where they were measured."""

from __future__ import annotations

import numpy as np

from pydamon.record.model import UNKNOWN, Record

#: The footprint columns a report shows, in its order.
FOOTPRINTS = ("rss_bytes", "vsz_bytes", "sys_used_bytes")


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


def rss_over_time(rec: Record) -> tuple[np.ndarray, np.ndarray]:
    """(seconds since the record's start, RSS bytes) of the snapshots whose RSS was measured."""
    keep = rec.rss_bytes >= 0
    return (rec.snap_end_us[keep] - rec.snap_start_us.min()) / 1e6, rec.rss_bytes[keep]
