"""DAMOS: data access monitoring-based operation schemes.

Build :class:`Scheme` objects (or parse them with :func:`parse_schemes` / :func:`load_schemes`)
and give them to a :class:`~pydamon.core.context.Context` (``schemes=`` or ``set_schemes()``); the
context runs them with :class:`SchemesEngine`.
"""

from collections.abc import Sequence

from pydamon.core.context import Context
from pydamon.core.schemes import register_schemes_runner
from pydamon.damos.engine import SchemesEngine
from pydamon.damos.fields import SchemeFileError
from pydamon.damos.metrics import ManualMetrics, MetricsSource, SystemMetrics
from pydamon.damos.parse import (
    dump_schemes,
    load_schemes,
    parse_schemes,
    scheme_from_kv,
    scheme_to_kv,
)
from pydamon.damos.scheme import (
    ACTIONS,
    DAMOS_MAX_SCORE,
    ULONG_MAX,
    AccessPattern,
    Action,
    AgeUnit,
    Filter,
    FilterType,
    GoalMetric,
    GoalTuner,
    NrAccessesUnit,
    Quota,
    QuotaGoal,
    QuotaState,
    Scheme,
    SchemeError,
    Stats,
    TriedRegion,
    Watermarks,
    WmarkMetric,
)
from pydamon.damos.scheme_text import format_scheme_line, parse_scheme_line
from pydamon.damos.score import cold_score, hot_score, scheme_score

# DAMOS attaches itself to the core: contexts given schemes run them with this engine.
register_schemes_runner(SchemesEngine)


def attach(
    ctx: Context, schemes: Sequence[Scheme], metrics: MetricsSource | None = None
) -> SchemesEngine:
    """Run ``schemes`` on ``ctx`` with a :class:`SchemesEngine` reading ``metrics`` (by default
    the operations set's, else the system's); returns the engine (stats, walk callbacks)."""
    engine = SchemesEngine(metrics=metrics)
    ctx.schemes_runner = engine
    ctx.set_schemes(schemes)
    return engine


__all__ = [
    "attach",
    "ACTIONS",
    "DAMOS_MAX_SCORE",
    "ULONG_MAX",
    "AccessPattern",
    "Action",
    "AgeUnit",
    "Filter",
    "FilterType",
    "GoalMetric",
    "GoalTuner",
    "ManualMetrics",
    "MetricsSource",
    "NrAccessesUnit",
    "Quota",
    "QuotaGoal",
    "QuotaState",
    "Scheme",
    "SchemeError",
    "SchemeFileError",
    "SchemesEngine",
    "Stats",
    "SystemMetrics",
    "TriedRegion",
    "Watermarks",
    "WmarkMetric",
    "cold_score",
    "dump_schemes",
    "format_scheme_line",
    "hot_score",
    "load_schemes",
    "parse_scheme_line",
    "parse_schemes",
    "scheme_from_kv",
    "scheme_to_kv",
    "scheme_score",
]
