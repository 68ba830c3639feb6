"""Working set size from snapshots (damo's ``report wss``).

The working set of a snapshot is the bytes of its regions accessed at all in the aggregation
(``nr_accesses > 0``, or at least ``min_nr_accesses``). :func:`wss_stats` gives the percentiles
and average over snapshots, :func:`render_wss` damo's table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pydamon.core.snapshot import Snapshot
from pydamon.report.heatmap import format_bytes

DEFAULT_PERCENTILES = (0, 25, 50, 75, 100)


def snapshot_wss(snap: Snapshot, min_nr_accesses: int = 1) -> int:
    """Bytes of the regions with at least ``min_nr_accesses`` (>= 1) accesses."""
    return int(snap.sizes[snap.nr_accesses >= max(min_nr_accesses, 1)].sum())


def wss_series(snapshots: Sequence[Snapshot], min_nr_accesses: int = 1) -> npt.NDArray[np.int64]:
    """Working set size of each snapshot, in the given order."""
    return np.array([snapshot_wss(s, min_nr_accesses) for s in snapshots], dtype=np.int64)


@dataclass
class WssStats:
    """Percentiles (``(percentile, bytes)``) and average of a working-set-size series."""

    percentiles: list[tuple[int, int]]
    avg: float
    nr_snapshots: int


def percentiles_of(
    values: Sequence[int] | npt.NDArray[np.int64],
    percentiles: Sequence[int] = DEFAULT_PERCENTILES,
) -> list[tuple[int, int]]:
    """(p, value) rows using damo's rule: the value at index ``len * p / 100`` of the sorted
    values (an observed value, never an interpolation)."""
    ordered = np.sort(np.asarray(values, dtype=np.int64))
    if not len(ordered):
        return []
    out = []
    for p in percentiles:
        if not 0 <= p <= 100:
            raise ValueError(f"percentile {p} is not within 0..100")
        idx = min(int(len(ordered) * p / 100), len(ordered) - 1)
        out.append((int(p), int(ordered[idx])))
    return out


def wss_stats(
    snapshots: Sequence[Snapshot],
    percentiles: Sequence[int] = DEFAULT_PERCENTILES,
    min_nr_accesses: int = 1,
) -> WssStats:
    series = wss_series(snapshots, min_nr_accesses)
    avg = float(series.mean()) if len(series) else 0.0
    return WssStats(percentiles_of(series, percentiles), avg, len(series))


def render_wss(stats: WssStats, *, bar_width: int = 50, title: str | None = None) -> str:
    """damo-style table: ``# <percentile> <wss>``, the average, one row per percentile with a
    bar relative to the largest value."""
    lines = ["# <percentile> <wss>"]
    if title:
        lines.append(f"# {title}")
    lines.append(f"# avg\t{format_bytes(stats.avg)}")
    top = max((v for _, v in stats.percentiles), default=0)
    for p, v in stats.percentiles:
        n = int(round(bar_width * v / top)) if top else 0
        lines.append(f"{p:3d}\t{format_bytes(v):>14}  |{'*' * n}{' ' * (bar_width - n)}|")
    return "\n".join(lines)
