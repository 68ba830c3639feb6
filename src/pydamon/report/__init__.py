"""Reports on monitoring results: pure functions of a :class:`~pydamon.record.Record`.

One module a report: :mod:`~pydamon.report.heatmap`, :mod:`~pydamon.report.wss`,
:mod:`~pydamon.report.access`, :mod:`~pydamon.report.footprints`, :mod:`~pydamon.report.times`,
:mod:`~pydamon.report.info`; :mod:`~pydamon.report.percentiles` and
:mod:`~pydamon.report.spans` serve several, :mod:`~pydamon.report.render` draws them as text
and images. Snapshots collected in a program become a record with
:meth:`Record.from_snapshots <pydamon.record.Record.from_snapshots>`.
"""

from pydamon.report.access import snapshot_access, temperature
from pydamon.report.footprints import footprint_columns
from pydamon.report.heatmap import HeatGrid, Heatmap, heatmap
from pydamon.report.info import record_info
from pydamon.report.percentiles import (
    DEFAULT_PERCENTILES,
    Distribution,
    distribution,
    percentiles_of,
)
from pydamon.report.render import (
    heat_digits,
    raw_form,
    render_heatmap,
    render_wss,
)
from pydamon.report.spans import hottest_span, record_spans
from pydamon.report.times import TimeRange, pattern_times
from pydamon.report.wss import WssStats, total_bytes, wss_bytes, wss_stats
from pydamon.units import format_bytes
from pydamon.units import format_duration_us as format_time_us

__all__ = [
    "DEFAULT_PERCENTILES",
    "Distribution",
    "HeatGrid",
    "Heatmap",
    "TimeRange",
    "WssStats",
    "distribution",
    "footprint_columns",
    "format_bytes",
    "format_time_us",
    "heat_digits",
    "heatmap",
    "hottest_span",
    "pattern_times",
    "percentiles_of",
    "raw_form",
    "record_info",
    "record_spans",
    "render_heatmap",
    "render_wss",
    "snapshot_access",
    "temperature",
    "total_bytes",
    "wss_bytes",
    "wss_stats",
]
