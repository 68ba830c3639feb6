"""pydamon: user-space DAMON (data access monitoring) and DAMOS (access-aware memory management).

The layering mirrors the kernel's mm/damon: :mod:`pydamon.core` (contexts, targets, regions and the
monitoring loop) knows nothing of address spaces; :mod:`pydamon.ops` holds the operations sets
(``vaddr``, ``fvaddr``, ``paddr`` and the simulated ``sim``); :mod:`pydamon.damos` turns monitoring
results into memory management; records, reports, modules and the CLI sit on top.
"""

from pydamon.core import (
    Attrs,
    AttrsError,
    Context,
    IntervalsGoal,
    Region,
    Regions,
    Snapshot,
    Target,
)

__version__ = "0.1.0"

__all__ = [
    "Attrs",
    "AttrsError",
    "Context",
    "IntervalsGoal",
    "Region",
    "Regions",
    "Snapshot",
    "Target",
    "__version__",
]
