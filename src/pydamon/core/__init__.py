"""The DAMON core: attributes, regions, contexts and the monitoring loop.

It knows nothing of address spaces; those are the operations sets' (:mod:`pydamon.ops`).
"""

from pydamon.core.attrs import (
    BP,
    RECOMMENDED_INTERVALS_GOAL,
    Attrs,
    AttrsError,
    IntervalsGoal,
)
from pydamon.core.clock import Clock, RealClock, VirtualClock
from pydamon.core.context import CallCanceled, Context, SchemesRunner, Target
from pydamon.core.feedback import feed_loop_next_input
from pydamon.core.regions import PAGE_SIZE, Region, Regions
from pydamon.core.snapshot import Snapshot

__all__ = [
    "BP",
    "PAGE_SIZE",
    "RECOMMENDED_INTERVALS_GOAL",
    "Attrs",
    "AttrsError",
    "CallCanceled",
    "Clock",
    "Context",
    "IntervalsGoal",
    "RealClock",
    "Region",
    "Regions",
    "SchemesRunner",
    "Snapshot",
    "Target",
    "VirtualClock",
    "feed_loop_next_input",
]
