"""What DAMOS actions do to a simulated address space: residency, huge pages, LRU, NUMA."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pydamon.core.regions import PAGE_SIZE
from pydamon.ops.sim.access import HUGE_PAGE_SIZE, AccessModel
from pydamon.ops.sim.intervals import IntervalMap
from pydamon.ops.sim.workloads import WorkloadSpec


@dataclass
class SimEffects:
    """What DAMOS actions did to a simulated address space (cumulative counters + state)."""

    mapped_bytes: int = 0
    #: Bytes currently resident (mapped minus paged out and not yet faulted back).
    resident_bytes: int = 0
    nonresident_bytes: int = 0
    #: Cumulative bytes paged out by ``pageout``.
    paged_out_bytes: int = 0
    #: Cumulative major faults (pages read back after a pageout), expected value.
    major_faults: float = 0.0
    #: Cumulative stall time of those faults (the simulated memory PSI).
    fault_stall_us: float = 0.0
    #: Cumulative bytes made resident ahead of use by ``willneed``/``collapse``.
    prefetched_bytes: int = 0
    huge_backed_bytes: int = 0
    #: Bytes currently deprioritised (``cold``/``lru_deprio``) or prioritised (``lru_prio``).
    deprioritized_bytes: int = 0
    prioritized_bytes: int = 0
    #: Bytes placed on each NUMA node by ``migrate_*`` (the rest is on node 0).
    node_bytes: dict[int, int] = field(default_factory=dict)
    #: Bytes each action was applied to (sum of ``sz_applied``).
    applied_bytes: dict[str, int] = field(default_factory=dict)


class ActionEffects(AccessModel):
    """An access model with the per-page state DAMOS actions change, kept as interval maps."""

    def __init__(self, spec: WorkloadSpec, seed: int, origin_us: int = 0) -> None:
        super().__init__(spec, seed, origin_us)
        # state changed by DAMOS actions
        self.nonresident = IntervalMap()
        self.huge = IntervalMap()
        self.lru = IntervalMap()  # 1.0 prioritised, 0.0 deprioritised
        self.node = IntervalMap()  # value: NUMA node id
        self._effects = SimEffects(mapped_bytes=spec.mapped_bytes)

    def advance_faults(self, start_us: int, end_us: int) -> None:
        """Fault back paged-out pages the workload touched in ``[start_us, end_us)``.

        Each non-resident interval keeps the fraction of its pages still paged out; it shrinks
        by the probability of no access over the window, estimated at up to 8 pages of the
        interval (expected values). Cost: number of intervals, not pages.
        """
        nr = self.nonresident
        if not len(nr):
            return
        j0, j1 = self.tick_span(start_us, end_us)
        probe_ticks = list(range(j0, j1)) if j1 - j0 <= 4 else [j0, (j0 + j1) // 2, j1 - 1]
        k = 8
        frac = (np.arange(k) + 0.5) / k
        sizes = nr.ends - nr.starts
        probe = nr.starts[:, None] + (sizes[:, None] * frac[None, :]).astype(np.int64)
        flat = probe.ravel()
        log_miss = np.zeros(len(flat))
        with np.errstate(divide="ignore"):
            for j in probe_ticks:
                log_miss += np.log1p(-self.access_prob(flat, j))
        miss = np.exp(log_miss * ((j1 - j0) / len(probe_ticks))).reshape(probe.shape).mean(1)
        before = nr.values
        after = before * miss
        faulted_bytes = float(((before - after) * sizes).sum())
        faults = faulted_bytes / PAGE_SIZE
        self._effects.major_faults += faults
        self._effects.fault_stall_us += faults * self.spec.major_fault_us
        nr.values = after
        keep = after > 1e-4
        if not keep.all():
            nr.starts, nr.ends, nr.values = nr.starts[keep], nr.ends[keep], nr.values[keep]
        nr.coalesce(tolerance=1e-3)

    def apply(self, start: int, end: int, action: str, target_nid: int | None = None) -> int:
        """Apply a DAMOS action to ``[start, end)``; return the bytes it was applied to."""
        pieces = self._mapped_pieces(start, end)
        if not pieces:
            return 0
        applied = 0
        for lo, hi in pieces:
            applied += self._apply_piece(lo, hi, action, target_nid)
        self._effects.applied_bytes[action] = self._effects.applied_bytes.get(action, 0) + applied
        return applied

    def _apply_piece(self, lo: int, hi: int, action: str, target_nid: int | None) -> int:
        size = hi - lo
        if action == "pageout":
            resident = size - self.nonresident.weighted_bytes(lo, hi)
            paged = int(round(resident / PAGE_SIZE)) * PAGE_SIZE
            self.nonresident.assign(lo, hi, 1.0)
            # a huge page is split to be swapped out
            self.huge.remove(lo, hi)
            self._effects.paged_out_bytes += paged
            return paged
        if action == "willneed":
            self._effects.prefetched_bytes += int(self.nonresident.weighted_bytes(lo, hi))
            self.nonresident.remove(lo, hi)
            return size
        if action in ("hugepage", "collapse"):
            # only whole, aligned 2 MiB parts can be backed by huge pages; treated as collapsed
            # at once (khugepaged's delay is not modelled)
            h_lo = -(-lo // HUGE_PAGE_SIZE) * HUGE_PAGE_SIZE
            h_hi = hi // HUGE_PAGE_SIZE * HUGE_PAGE_SIZE
            if h_lo >= h_hi:
                return 0
            if action == "collapse":
                # collapsing reads paged-out pages back in
                self._effects.prefetched_bytes += int(self.nonresident.weighted_bytes(h_lo, h_hi))
                self.nonresident.remove(h_lo, h_hi)
            self.huge.assign(h_lo, h_hi, 1.0)
            return h_hi - h_lo
        if action == "nohugepage":
            self.huge.remove(lo, hi)
            return size
        if action in ("cold", "lru_deprio"):
            self.lru.assign(lo, hi, 0.0)
            return size
        if action == "lru_prio":
            self.lru.assign(lo, hi, 1.0)
            return size
        if action in ("migrate_hot", "migrate_cold"):
            nid = 0 if target_nid is None else int(target_nid)
            if nid == 0:
                self.node.remove(lo, hi)
            else:
                self.node.assign(lo, hi, float(nid))
            return size
        if action == "stat":
            return size
        raise ValueError(f"the sim operations set does not know the action {action!r}")

    @property
    def effects(self) -> SimEffects:
        e = self._effects
        mapped = self.spec.mapped_bytes
        nonres = int(self.nonresident.weighted_bytes())
        e.nonresident_bytes = nonres
        e.resident_bytes = mapped - nonres
        e.huge_backed_bytes = int(self.huge.weighted_bytes())
        e.deprioritized_bytes = self.lru.bytes_where(lambda v: v == 0.0)
        e.prioritized_bytes = self.lru.bytes_where(lambda v: v == 1.0)
        nodes: dict[int, int] = {}
        for s, en, v in zip(self.node.starts, self.node.ends, self.node.values):
            nodes[int(v)] = nodes.get(int(v), 0) + int(en - s)
        nodes[0] = mapped - sum(nodes.values())
        e.node_bytes = nodes
        return e

    @property
    def memory_total_bytes(self) -> int:
        return self.spec.memory_total_bytes or 2 * self.spec.mapped_bytes

    def free_mem_rate_permil(self) -> int:
        """Free memory per mille of the simulated machine's total (watermarks' metric)."""
        total = self.memory_total_bytes
        used = self.effects.resident_bytes + self.spec.other_used_bytes
        return max(total - used, 0) * 1000 // total
