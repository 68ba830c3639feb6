"""``SimOperations``: the operations set over simulated address spaces."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydamon.core.clock import Clock, VirtualClock
from pydamon.core.operations import ApplyResult, update_regions_access
from pydamon.core.regions import Regions
from pydamon.core.snapshot import Snapshot
from pydamon.damos.scheme import Scheme
from pydamon.ops.scoring import DamosOperations
from pydamon.ops.sim.access import IntArray
from pydamon.ops.sim.effects import SimEffects
from pydamon.ops.sim.metrics import SimMetrics
from pydamon.ops.sim.space import SimSpace
from pydamon.ops.sim.truth import Accuracy, RateMap
from pydamon.ops.sim.workloads import WorkloadSpec, get_workload

if TYPE_CHECKING:
    from pydamon.core.context import Context, Target


def vaddr_init_ranges(areas: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The kernel vaddr's three initial regions: the areas minus the two biggest gaps."""
    areas = sorted(areas)
    if len(areas) < 3:
        return [(s, e) for s, e in areas] if len(areas) < 2 else [areas[0], areas[-1]]
    gaps = [(areas[i + 1][0] - areas[i][1], i) for i in range(len(areas) - 1)]
    # the two biggest gaps (earlier one first on ties), in address order
    cut = sorted(i for _, i in sorted(gaps, key=lambda g: (-g[0], g[1]))[:2])
    return [
        (areas[0][0], areas[cut[0]][1]),
        (areas[cut[0] + 1][0], areas[cut[1]][1]),
        (areas[cut[1] + 1][0], areas[-1][1]),
    ]


class SimOperations(DamosOperations):
    """Operations set over simulated address spaces (one workload per target, by index).

    ``seed`` fixes the workloads' accesses; by default it is the context's seed (or drawn from
    its ``rng``). Sampling addresses come from the context's ``rng``.

    Ground truth and effects are per target: :meth:`space`, or the shortcuts
    :meth:`true_access_counts`, :meth:`expected_rates`, :meth:`accuracy`,
    :meth:`truth_snapshot` and :attr:`effects` (target 0 unless ``target_index`` is given).
    """

    name = "sim"

    def __init__(
        self,
        workloads: WorkloadSpec | str | list[WorkloadSpec | str] = "hotcold",
        *,
        seed: int | None = None,
        total_bytes: int | None = None,
    ) -> None:
        items = workloads if isinstance(workloads, list) else [workloads]
        self.specs: list[WorkloadSpec] = []
        for w in items:
            if isinstance(w, str):
                w = get_workload(w) if total_bytes is None else get_workload(w, total_bytes)
            w.validate()
            self.specs.append(w)
        self.seed = seed
        self.spaces: list[SimSpace] = []
        self._window_start_us = 0
        self._last_faults_us: int | None = None
        self._metrics: SimMetrics | None = None

    def default_clock(self) -> Clock:
        return VirtualClock()

    def space(self, target_index: int = 0) -> SimSpace:
        if not self.spaces:
            raise RuntimeError("the sim operations set is not initialised; run a context first")
        return self.spaces[target_index]

    def _space_for(self, ctx: Context, target: Target) -> SimSpace:
        space = target.ops_private
        if not isinstance(space, SimSpace):
            raise RuntimeError("target is not one of this sim operations set's targets")
        return space

    # -- Operations ---------------------------------------------------------------------------
    def init(self, ctx: Context) -> None:
        if not ctx.targets:
            raise ValueError("the sim operations set needs at least one target")
        seed = self.seed
        if seed is None:
            seed = ctx.seed if ctx.seed is not None else int(ctx.rng.integers(0, 2**62))
        self.seed = seed
        now = ctx.clock.now_us()
        # one space per target; a re-run keeps the existing ones (and their state)
        for i in range(len(self.spaces), len(ctx.targets)):
            self.spaces.append(SimSpace(self.specs[i % len(self.specs)], seed + 7919 * i, now))
        for i, t in enumerate(ctx.targets):
            space = self.spaces[i]
            t.ops_private = space
            if len(t.regions):
                continue  # regions kept from an earlier run of this context
            if t.ranges:
                t.regions = Regions()
                t.regions.set_regions(t.ranges, ctx.min_region_sz)
                continue
            ranges = vaddr_init_ranges(
                list(zip(space.area_starts.tolist(), space.area_ends.tolist()))
            )
            regions = Regions(ranges)
            total = regions.total_size
            sz = max(total // max(ctx.attrs.min_nr_regions, 1), ctx.min_region_sz)
            # split the last ones first so the indices of the earlier ones stay valid
            for j in reversed(range(len(ranges))):
                nr_pieces = max(int(regions.sizes[j]) // sz, 1)
                regions.evenly_split(j, nr_pieces, ctx.min_region_sz)
            t.regions = regions
        self._last_faults_us = now

    def update(self, ctx: Context) -> None:
        # The simulated layout never changes, so the vaddr-style update has nothing to do.
        return None

    def prepare_access_checks(self, ctx: Context) -> None:
        self._window_start_us = ctx.clock.now_us()
        for t in ctx.targets:
            t.regions.pick_sampling_addrs(ctx.rng)

    def check_accesses(self, ctx: Context) -> int:
        now = ctx.clock.now_us()
        max_nr = 0
        for t in ctx.targets:
            space = self._space_for(ctx, t)
            accessed = space.accessed_in_window(t.regions.sampling_addr, self._window_start_us, now)
            max_nr = max(max_nr, update_regions_access(ctx, t, accessed))
            if len(space.nonresident):
                space.advance_faults(self._last_faults_us or self._window_start_us, now)
        self._last_faults_us = now
        return max_nr

    def target_valid(self, ctx: Context, target: Target) -> bool:
        space = target.ops_private
        if not isinstance(space, SimSpace):
            return True
        return space.valid_at(ctx.clock.now_us())

    def apply_scheme(
        self, ctx: Context, target: Target, start: int, end: int, scheme: Scheme
    ) -> ApplyResult:
        action = str(scheme.action)
        space = self._space_for(ctx, target)
        mapped = sum(hi - lo for lo, hi in space._mapped_pieces(start, end))
        applied = space.apply(start, end, action, scheme.target_nid)
        return ApplyResult(sz_applied=applied, sz_ops_filter_passed=mapped)

    # -- ground truth and effects shortcuts ---------------------------------------------------
    def true_access_counts(
        self, start: int, end: int, start_us: int, end_us: int, target_index: int = 0
    ) -> IntArray:
        return self.space(target_index).true_access_counts(start, end, start_us, end_us)

    def expected_rates(
        self, start: int, end: int, start_us: int, end_us: int, target_index: int = 0
    ) -> RateMap:
        return self.space(target_index).expected_rates(start, end, start_us, end_us)

    def truth_snapshot(self, snap: Snapshot) -> Snapshot:
        return self.space(snap.target_index).truth_snapshot(snap)

    def accuracy(self, snap: Snapshot, hot_threshold: float = 0.5) -> Accuracy:
        return self.space(snap.target_index).accuracy(snap, hot_threshold)

    @property
    def effects(self) -> SimEffects:
        """Effects of DAMOS actions on target 0's address space (see :meth:`space`)."""
        return self.space(0).effects

    @property
    def metrics(self) -> SimMetrics:
        """A ``pydamon.damos.metrics.MetricsSource`` over the simulated machine (target 0)."""
        if self._metrics is None:
            self._metrics = SimMetrics(self)
        return self._metrics

    def free_mem_rate_permil(self) -> int:
        return self.space(0).free_mem_rate_permil()

    @property
    def memory_total_bytes(self) -> int:
        return self.space(0).memory_total_bytes if self.spaces else 2 * self.specs[0].mapped_bytes


def layout_ranges(spec: WorkloadSpec) -> list[tuple[int, int]]:
    """Address ranges of a workload's areas (for fvaddr-style targets with given ranges)."""
    return [(s, e) for _, s, e in spec.layout()]
