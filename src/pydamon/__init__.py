"""pydamon: user-space DAMON (data access monitoring) and DAMOS (access-aware memory management).

The public API is one import away::

    import pydamon

    ops = pydamon.select_operations("sim", workloads="hotcold")
    ctx = pydamon.Context(ops, [pydamon.Target()], pydamon.Attrs(), seed=1,
                          schemes=pydamon.parse_schemes("4K max 0 0 2s max pageout"))
    for snapshots in ctx.aggregations(nr_aggregations=20):
        print(snapshots[0].total_bytes)

The layering mirrors the kernel's mm/damon: :mod:`pydamon.core` (contexts, targets, regions, the
monitoring loop and the interfaces it owns) knows nothing of address spaces; :mod:`pydamon.ops`
holds the operations sets (``vaddr``, ``fvaddr``, ``paddr`` and the simulated ``sim``);
:mod:`pydamon.damos` turns monitoring results into memory management; records, reports, modules
and the CLI sit on top. Names are imported on first use, so ``import pydamon`` stays cheap.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydamon.core import (
        Attrs,
        AttrsError,
        Context,
        FeatureMissing,
        IntervalsGoal,
        Operations,
        Region,
        Regions,
        Snapshot,
        Target,
        TargetGone,
        operations_names,
        select_operations,
    )
    from pydamon.damos import (
        AccessPattern,
        Action,
        Filter,
        Quota,
        QuotaGoal,
        Scheme,
        SchemeError,
        Watermarks,
        load_schemes,
        parse_schemes,
    )
    from pydamon.ops.paddr import PaddrOperations
    from pydamon.ops.sim import SimOperations
    from pydamon.ops.vaddr import FvaddrOperations, VaddrOperations
    from pydamon.record import Record, RecordError, read_record, write_record

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_WHERE = {
    **dict.fromkeys(
        (
            "Attrs",
            "AttrsError",
            "Context",
            "FeatureMissing",
            "IntervalsGoal",
            "Operations",
            "Region",
            "Regions",
            "Snapshot",
            "Target",
            "TargetGone",
            "operations_names",
            "select_operations",
        ),
        "pydamon.core",
    ),
    **dict.fromkeys(
        (
            "AccessPattern",
            "Action",
            "Filter",
            "Quota",
            "QuotaGoal",
            "Scheme",
            "SchemeError",
            "Watermarks",
            "load_schemes",
            "parse_schemes",
        ),
        "pydamon.damos",
    ),
    "SimOperations": "pydamon.ops.sim",
    "VaddrOperations": "pydamon.ops.vaddr",
    "FvaddrOperations": "pydamon.ops.vaddr",
    "PaddrOperations": "pydamon.ops.paddr",
    **dict.fromkeys(("Record", "RecordError", "read_record", "write_record"), "pydamon.record"),
}

__all__ = [
    "AccessPattern",
    "Action",
    "Attrs",
    "AttrsError",
    "Context",
    "FeatureMissing",
    "Filter",
    "FvaddrOperations",
    "IntervalsGoal",
    "Operations",
    "PaddrOperations",
    "Quota",
    "QuotaGoal",
    "Record",
    "RecordError",
    "Region",
    "Regions",
    "Scheme",
    "SchemeError",
    "SimOperations",
    "Snapshot",
    "Target",
    "TargetGone",
    "VaddrOperations",
    "Watermarks",
    "__version__",
    "load_schemes",
    "operations_names",
    "parse_schemes",
    "read_record",
    "select_operations",
    "write_record",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: the core pulls in numpy, which light commands (``pydamon status``)
    # should not pay for.
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'pydamon' has no attribute {name!r}")
    if where == "pydamon.core":
        import_module("pydamon.ops")  # registers the operations sets select_operations names
        import_module("pydamon.damos")  # registers the schemes runner of contexts
    value = getattr(import_module(where), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
