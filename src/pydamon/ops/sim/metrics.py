"""The simulated machine's metrics for DAMOS watermarks and quota goals."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydamon.damos.metrics import BP, MetricsSource

if TYPE_CHECKING:
    from pydamon.ops.sim.operations import SimOperations


def _share_bp(in_use: int, total: int, used: bool) -> int:
    """The used (or free) share of ``total``, in basis points."""
    return (in_use if used else total - in_use) * BP // total


class SimMetrics(MetricsSource):
    """A :class:`pydamon.damos.metrics.MetricsSource` reading the simulated machine of ``ops``
    (target 0's address space; fault stalls of all of them)."""

    def __init__(self, ops: SimOperations) -> None:
        self.ops = ops

    def free_mem_rate_permil(self) -> int | None:
        return self.ops.space(0).free_mem_rate_permil()

    def some_mem_psi_total_us(self) -> int | None:
        return int(sum(s.effects.fault_stall_us for s in self.ops.spaces))

    def node_mem_bp(self, nid: int | None, used: bool) -> int:
        space = self.ops.space(0)
        total = space.memory_total_bytes
        if nid is None:
            in_use = space.effects.resident_bytes + space.spec.other_used_bytes
        else:
            in_use = space.effects.node_bytes.get(nid, 0)
        return _share_bp(min(in_use, total), total, used)

    def node_memcg_bp(self, nid: int | None, path: str | None, used: bool) -> int:
        # the simulated process is the only memcg
        space = self.ops.space(0)
        total = space.memory_total_bytes
        return _share_bp(min(space.effects.resident_bytes, total), total, used)

    def lru_mem_bp(self, active: bool) -> int:
        e = self.ops.space(0).effects
        resident = max(e.resident_bytes, 1)
        inactive = min(e.deprioritized_bytes, resident)
        return (resident - inactive if active else inactive) * BP // resident
