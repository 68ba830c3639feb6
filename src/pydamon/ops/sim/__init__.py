"""``sim``: a deterministic simulated address space with exact ground truth.

A :class:`~pydamon.ops.sim.workloads.WorkloadSpec` describes a process's memory areas and its
access phases. Time is cut into ticks (``spec.tick_us``); page ``P`` is accessed in tick ``j``
iff ``hash(seed, P, j) < p(P, j)``, where ``p`` comes from the phase active at tick ``j`` (area
probability, raised inside hot spots). The hash is a counter-based mixer (splitmix64), so

- sampling needs no per-page state: checking a region's sampling page costs a few numpy
  operations per region whatever the simulated memory size,
- the ground truth is exact and can be queried afterwards for any pages and time window
  (:meth:`SimOperations.true_access_counts`), and the expected per-page rates are known
  analytically for whole address ranges (:meth:`SimOperations.expected_rates`),
- a seed reproduces a run exactly.

A sampling window ``[t0, t1)`` (prepare -> check) sees a page accessed if it is accessed in any
tick overlapping the window. Windows longer than
:data:`~pydamon.ops.sim.access.MAX_EXACT_TICKS` ticks (auto-tuned long sampling intervals) draw
"accessed at least once" from its exact probability with one hash instead of testing every tick;
the distribution is exact, but the event is not the OR of the per-tick ground-truth events.

DAMOS actions change per-page state kept as interval maps (not per-page objects): residency
(``pageout`` pages out; touching a paged-out page costs a major fault and makes it resident),
huge-page backing (``hugepage``/``collapse`` back 2 MiB-aligned parts, ``nohugepage`` and
``pageout`` split them; an access check in a huge page sees the whole 2 MiB page's Accessed bit,
as the kernel's PMD check does), LRU priority (``cold``/``lru_deprio``, ``lru_prio``), NUMA
placement (``migrate_hot``/``migrate_cold`` to ``scheme.target_nid``). Refaults are computed
per interval from the access probabilities (expected values, so they cost nothing per page).
See :class:`SimEffects`; :attr:`SimOperations.metrics` serves ``free_mem_rate`` and the other
watermark/quota-goal metrics from this state.

The modules: ``workloads`` (the specs and the named workloads), ``access`` (the access model),
``truth`` (ground truth and accuracy), ``intervals`` and ``effects`` (the state DAMOS actions
change), ``space`` (:class:`SimSpace`, the three together), ``metrics`` (:class:`SimMetrics`) and
``operations`` (:class:`SimOperations`, the operations set).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydamon.ops.sim.access import HUGE_PAGE_SIZE
    from pydamon.ops.sim.effects import SimEffects
    from pydamon.ops.sim.intervals import IntervalMap
    from pydamon.ops.sim.metrics import SimMetrics
    from pydamon.ops.sim.operations import SimOperations, vaddr_init_ranges
    from pydamon.ops.sim.space import SimSpace
    from pydamon.ops.sim.truth import Accuracy, RateMap
    from pydamon.ops.sim.workloads import (
        WORKLOADS,
        Area,
        HotSpot,
        Phase,
        WorkloadError,
        WorkloadSpec,
        get_workload,
        load_workload,
        spec_from_dict,
    )

#: Public name -> its module. Imported on first use: the workload program (started many times
#: by the guest tests, where an import costs ~17x) needs only ``workloads``, not DAMOS.
_WHERE = {
    "HUGE_PAGE_SIZE": "access",
    "SimEffects": "effects",
    "IntervalMap": "intervals",
    "SimMetrics": "metrics",
    "SimOperations": "operations",
    "vaddr_init_ranges": "operations",
    "SimSpace": "space",
    "Accuracy": "truth",
    "RateMap": "truth",
    **dict.fromkeys(
        (
            "WORKLOADS",
            "Area",
            "HotSpot",
            "Phase",
            "WorkloadError",
            "WorkloadSpec",
            "get_workload",
            "load_workload",
            "spec_from_dict",
        ),
        "workloads",
    ),
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'pydamon.ops.sim' has no attribute {name!r}")
    value = getattr(import_module(f"pydamon.ops.sim.{where}"), name)
    globals()[name] = value
    return value


__all__ = [
    "HUGE_PAGE_SIZE",
    "WORKLOADS",
    "Accuracy",
    "Area",
    "HotSpot",
    "IntervalMap",
    "Phase",
    "RateMap",
    "SimEffects",
    "SimMetrics",
    "SimOperations",
    "SimSpace",
    "WorkloadError",
    "WorkloadSpec",
    "get_workload",
    "load_workload",
    "spec_from_dict",
    "vaddr_init_ranges",
]
