"""What a record file holds (``pydamon report info``)."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import numpy as np

from pydamon.record.model import Record


def record_info(rec: Record, path: str) -> dict[str, Any]:
    """Format, completeness, size, time, intervals and targets of ``rec``, read from ``path``
    (JSON-ready)."""
    return {
        "file": path,
        "file_bytes": os.path.getsize(path),
        "format": rec.source_format,
        "complete": rec.complete,
        "nr_snapshots": rec.nr_snapshots,
        "nr_regions_total": rec.nr_regions_total,
        "duration_us": rec.duration_us,
        "ops": rec.meta.get("ops"),
        "targets": [
            {"index": t.index, "target_id": t.target_id, "pid": t.pid, "name": t.name}
            for t in rec.targets
        ],
        "sample_interval_us": sorted({int(x) for x in np.unique(rec.snap_sample_us)}),
        "aggr_interval_us": sorted({int(x) for x in np.unique(rec.snap_aggr_us)}),
        "warnings": rec.warnings,
        "damage": [asdict(d) for d in rec.damage],
    }
