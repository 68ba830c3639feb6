"""The DAMON core: attributes, regions, contexts and the monitoring loop.

It knows nothing of address spaces; those are the operations sets' (:mod:`pydamon.ops`), which
implement the interface it owns (:mod:`pydamon.core.operations`).
"""

from pydamon.core.attrs import (
    BP,
    RECOMMENDED_INTERVALS_GOAL,
    Attrs,
    AttrsError,
    IntervalsGoal,
)
from pydamon.core.clock import Clock, RealClock, VirtualClock
from pydamon.core.context import CallCanceled, Context, Target
from pydamon.core.errors import FeatureMissing, RealMemoryError, TargetGone
from pydamon.core.feedback import feed_loop_next_input
from pydamon.core.operations import (
    MAX_SCHEME_SCORE,
    ApplyResult,
    Operations,
    OperationsUnavailable,
    operations_class,
    operations_description,
    operations_names,
    register_operations,
    select_operations,
    update_regions_access,
)
from pydamon.core.regions import PAGE_SIZE, Region, Regions
from pydamon.core.schemes import SchemesRunner, register_schemes_runner
from pydamon.core.snapshot import Snapshot

__all__ = [
    "BP",
    "MAX_SCHEME_SCORE",
    "PAGE_SIZE",
    "RECOMMENDED_INTERVALS_GOAL",
    "ApplyResult",
    "Attrs",
    "AttrsError",
    "CallCanceled",
    "Clock",
    "Context",
    "FeatureMissing",
    "IntervalsGoal",
    "Operations",
    "OperationsUnavailable",
    "RealClock",
    "RealMemoryError",
    "Region",
    "Regions",
    "SchemesRunner",
    "Snapshot",
    "Target",
    "TargetGone",
    "VirtualClock",
    "feed_loop_next_input",
    "operations_class",
    "operations_description",
    "operations_names",
    "register_operations",
    "register_schemes_runner",
    "select_operations",
    "update_regions_access",
]
