"""Reports on monitoring results: pure functions of :class:`~pydamon.core.snapshot.Snapshot`\\ s
(and of records, in :mod:`pydamon.report.stats`)."""

from pydamon.report.heatmap import (
    Heatmap,
    format_bytes,
    format_time_us,
    heat_digits,
    heatmap,
    monitored_spans,
    render_heatmap,
)
from pydamon.report.wss import (
    WssStats,
    percentiles_of,
    render_wss,
    snapshot_wss,
    wss_series,
    wss_stats,
)

__all__ = [
    "Heatmap",
    "WssStats",
    "format_bytes",
    "format_time_us",
    "heat_digits",
    "heatmap",
    "monitored_spans",
    "percentiles_of",
    "render_heatmap",
    "render_wss",
    "snapshot_wss",
    "wss_series",
    "wss_stats",
]
