"""pydamon: user-space DAMON (data access monitoring) and DAMOS (access-aware memory management).

The layering mirrors the kernel's mm/damon: :mod:`pydamon.core` (contexts, targets, regions and the
monitoring loop) knows nothing of address spaces; :mod:`pydamon.ops` holds the operations sets
(``vaddr``, ``fvaddr``, ``paddr`` and the simulated ``sim``); :mod:`pydamon.damos` turns monitoring
results into memory management; records, reports, modules and the CLI sit on top.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    # Imported on first use: the core pulls in numpy, which light commands (``pydamon status``)
    # should not pay for.
    if name in __all__ and name != "__version__":
        import pydamon.core

        return getattr(pydamon.core, name)
    raise AttributeError(f"module 'pydamon' has no attribute {name!r}")
