"""Virtual address spaces of processes (the kernel's ``vaddr`` and ``fvaddr`` operations sets).

Targets are pids. The access check of a region uses its sampling address's page:

- ``prepare_access_checks``: pick a random sampling address per region, translate it through
  ``/proc/PID/pagemap`` to a PFN (THP tail pages to their head, whose bit page_idle tracks), and set
  that page's bit in ``/sys/kernel/mm/page_idle/bitmap`` (which clears its PTE accessed bits);
- ``check_accesses``: read the bits back; a page still idle was not accessed. A page not present,
  swapped out, not on an LRU list (e.g. still in a per-CPU LRU-add batch: page_idle cannot track
  it) or unmapped counts as not accessed.

The PFN of prepare time is re-used at check time, so each region costs one pagemap read and a
share of one bitmap write at prepare (the addresses whose frames share a 64-frame bitmap word
share its write) and a share of one bitmap read at check; kpageflags are read at prepare only
where huge pages may be (:mod:`pydamon.ops.hugemaps`, re-learnt at each ops update, fvaddr's
too), elsewhere at check time for the frames whose bit reads "accessed" (in C when the helper of
:mod:`pydamon.ops._native` builds, else in Python). Nothing walks a whole region.

``vaddr`` starts from the kernel's three regions (all mappings minus the two biggest unmapped gaps,
evenly split into ``min_nr_regions``-sized pieces) and re-reads ``/proc/PID/maps`` every
ops-update interval (``damon_set_regions()`` semantics); targets given ``ranges`` keep them.
``fvaddr`` monitors exactly the user-given ``ranges`` and never updates them.

Actions (``apply_scheme``): ``pageout``, ``cold``, ``willneed``, ``collapse`` through
``process_madvise(2)``; ``hugepage``/``nohugepage`` only when the target is this process (the
kernel refuses them through process_madvise); ``stat`` does nothing.
"""

from __future__ import annotations

import os
import select
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from pydamon.core.budget import DEFAULT_REAL_CPU_BUDGET_PERCENT
from pydamon.core.errors import FeatureMissing, RealMemoryError, TargetGone
from pydamon.core.operations import ApplyResult, update_regions_access
from pydamon.core.regions import PAGE_SIZE, Regions, align_down, align_up
from pydamon.damos.filters import needed_facts, ops_filters_pass, passing_ranges
from pydamon.damos.scheme import Scheme
from pydamon.ops import _native, _proc, pagefacts
from pydamon.ops.hugemaps import HugeMappings
from pydamon.ops.madvise import (
    MADV,
    REMOTE_ADVICE,
    MadviseResult,
    madvise,
    pidfd_open,
    process_madvise,
)
from pydamon.ops.probe import require
from pydamon.ops.scoring import DamosOperations

if TYPE_CHECKING:
    from pydamon.core.context import Context, Target

IntArray = pagefacts.IntArray


class ActionUnsupported(RealMemoryError):
    """A DAMOS action this operations set cannot apply (one-line message)."""


@dataclass
class _VaState:
    """Per-target state of the vaddr operations set (``Target.ops_private``)."""

    pid: int
    pidfd: int
    pagemap: pagefacts.Pagemap
    #: the per-sample access checks of this target (sampling addresses, PFNs checked)
    sampler: _native.Sampler
    #: where this target's huge pages may be (the sampler reads kpageflags only there)
    huge: HugeMappings
    gone: bool = False
    poller: select.poll | None = None
    #: mappings cached for apply_scheme, with the aggregation count they were read at
    maps: list[_proc.Mapping] = field(default_factory=list)
    maps_aggregation: int = -1

    def close(self) -> None:
        self.pagemap.close()
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1


def evenly_split_init(regions: Regions, min_nr_regions: int, min_region_sz: int) -> None:
    """Split each initial region into pieces of ``total / min_nr_regions`` bytes (vaddr init)."""
    sz = max(regions.total_size // max(min_nr_regions, 1), min_region_sz)
    # split from the last region so earlier indices stay valid
    for i in reversed(range(len(regions))):
        nr_pieces = int(regions.end[i] - regions.start[i]) // sz
        if nr_pieces > 1:
            try:
                regions.evenly_split(i, nr_pieces, min_region_sz)
            except ValueError:
                pass  # too small to split: keep it whole, as the kernel does


class VaddrOperations(DamosOperations):
    """Monitor processes' virtual address spaces (``vaddr``)."""

    name = "vaddr"
    #: fvaddr: user-given fixed ranges only, never updated.
    fixed_ranges = False
    #: DAMOS ops-layer filters evaluated per page (pagemap, kpageflags, kpagecgroup, page_idle)
    supported_ops_filters = pagefacts.OPS_FILTERS

    def __init__(self, *, native: bool = True) -> None:
        #: use the C helper for the per-sample loop when it can be built (see ops._native)
        self.native = native
        self.phys: pagefacts.PhysPages | None = None
        #: ranges an action failed on, per errno (counted, never fatal)
        self.apply_errors: dict[int, int] = {}

    def default_cpu_budget(self) -> float | None:
        # real memory: bounded cost by default (docs/real-memory.md says why 5%)
        return DEFAULT_REAL_CPU_BUDGET_PERCENT

    # -- setup -----------------------------------------------------------------------------------
    def init(self, ctx: Context) -> None:
        require(self.name)
        self._check_schemes(ctx)
        try:
            self.phys = pagefacts.PhysPages()
        except PermissionError:
            raise FeatureMissing(
                f"{self.name} monitoring needs write access to {pagefacts.PAGE_IDLE_BITMAP}; "
                "run as root"
            ) from None
        try:
            for t in ctx.targets:
                self._init_target(ctx, t)
        except BaseException:
            self.cleanup(ctx)
            raise

    def _check_schemes(self, ctx: Context) -> None:
        for s in ctx.schemes:
            action = str(getattr(s, "action", "stat"))
            if action != "stat" and action not in MADV:
                raise ActionUnsupported(
                    f"the {self.name} operations set cannot apply the {action} action; "
                    f"use one of stat, {', '.join(sorted(MADV))}"
                )

    def _init_target(self, ctx: Context, t: Target) -> None:
        if t.pid is None:
            raise TargetGone(f"{self.name} targets need a pid (Target(pid=...))")
        pid = t.pid
        if self.fixed_ranges and not t.ranges and not len(t.regions):
            raise RealMemoryError(
                f"fvaddr target {pid} needs fixed ranges (Target(pid, ranges=[(start, end)]))"
            )
        try:
            pidfd = pidfd_open(pid)
        except ProcessLookupError:
            raise TargetGone(
                f"process {pid} does not exist; give the pid of a running process"
            ) from None
        except PermissionError:
            raise FeatureMissing(
                f"cannot watch process {pid}: permission denied; run as root"
            ) from None
        try:
            pagemap = pagefacts.Pagemap(pid)
        except ProcessLookupError:
            os.close(pidfd)
            raise TargetGone(f"process {pid} exited before monitoring started") from None
        except PermissionError:
            os.close(pidfd)
            raise FeatureMissing(
                f"cannot read /proc/{pid}/pagemap: permission denied; run as root"
            ) from None
        state = _VaState(
            pid, pidfd, pagemap, _native.Sampler(ctx.rng, self.native), HugeMappings(pid)
        )
        t.ops_private = state

        def tails_seen(addrs: IntArray) -> None:
            state.huge.tails_seen(addrs)
            state.sampler.huge = state.huge.ranges

        state.sampler.on_tails_seen = tails_seen
        try:
            maps = self._refresh_huge(state)
        except ProcessLookupError:
            raise TargetGone(f"process {pid} exited before monitoring started") from None
        if t.ranges:
            t.regions = Regions(
                [
                    (align_down(s, ctx.min_region_sz), align_up(e, ctx.min_region_sz))
                    for s, e in sorted(t.ranges)
                ]
            )
            return
        if len(t.regions):
            return  # regions set by the user directly
        ranges = _proc.three_regions(maps, ctx.min_region_sz)
        if ranges is None:
            if not maps:
                raise TargetGone(f"process {pid} has no memory mappings (a kernel thread?)")
            ranges = [
                (
                    align_down(maps[0].start, ctx.min_region_sz),
                    align_up(maps[-1].end, ctx.min_region_sz),
                )
            ]
        t.regions = Regions(ranges)
        evenly_split_init(t.regions, ctx.attrs.min_nr_regions, ctx.min_region_sz)

    @staticmethod
    def _refresh_huge(state: _VaState) -> list[_proc.Mapping]:
        """Where the target's huge pages may be, re-learnt (see hugemaps); its mappings."""
        try:
            maps = state.huge.update()
        except PermissionError:  # smaps unreadable: huge pages may be anywhere
            state.sampler.huge = None
            return _proc.read_maps(state.pid)
        state.sampler.huge = state.huge.ranges
        return maps

    def update(self, ctx: Context) -> None:
        for t in ctx.targets:
            state = t.ops_private
            if not isinstance(state, _VaState) or state.gone:
                continue
            try:
                maps = self._refresh_huge(state)
            except ProcessLookupError:
                continue  # target_valid() ends it
            if self.fixed_ranges or t.ranges:
                continue
            ranges = _proc.three_regions(maps, ctx.min_region_sz)
            if ranges is not None:
                t.regions.set_regions(ranges, ctx.min_region_sz)

    # -- access checks ---------------------------------------------------------------------------
    def prepare_access_checks(self, ctx: Context) -> None:
        assert self.phys is not None
        for t in ctx.targets:
            state = t.ops_private
            if not isinstance(state, _VaState):
                continue
            if state.gone:
                state.sampler.skip(t.regions)
                continue
            state.sampler.pick_prepare(self.phys, state.pagemap, t.regions)

    def check_accesses(self, ctx: Context) -> int:
        assert self.phys is not None
        max_nr_accesses = 0
        for t in ctx.targets:
            state = t.ops_private
            if isinstance(state, _VaState):
                nr = state.sampler.check_update(self.phys, t.regions, ctx.attrs.max_nr_accesses)
            else:
                nr = update_regions_access(ctx, t, np.zeros(len(t.regions), np.bool_))
            max_nr_accesses = max(max_nr_accesses, nr)
        return max_nr_accesses

    def target_valid(self, ctx: Context, target: Target) -> bool:
        state = target.ops_private
        if not isinstance(state, _VaState):
            return True
        if state.gone:
            return False
        if state.poller is None:  # kept: this runs every sample
            state.poller = select.poll()
            state.poller.register(state.pidfd, select.POLLIN)
        if state.poller.poll(0):  # a pidfd turns readable when its process exits
            state.gone = True
            return False
        return True

    # -- actions ---------------------------------------------------------------------------------
    def _mapped_pieces(
        self, ctx: Context, state: _VaState, start: int, end: int
    ) -> list[tuple[int, int]]:
        """``[start, end)`` cut to the target's mappings (madvise fails on holes)."""
        if state.maps_aggregation != ctx.nr_aggregations:
            try:
                state.maps = _proc.read_maps(state.pid)
            except ProcessLookupError:
                state.maps = []
            state.maps_aggregation = ctx.nr_aggregations
        return [
            (max(m.start, start), min(m.end, end))
            for m in state.maps
            if m.start < end and start < m.end
        ]

    def apply_scheme(
        self, ctx: Context, target: Target, start: int, end: int, scheme: Scheme
    ) -> ApplyResult:
        action = scheme.action
        if action == "stat":
            return ApplyResult(0, 0)
        advice = MADV.get(action)
        if advice is None:
            raise ActionUnsupported(f"the {self.name} operations set cannot apply {action}")
        state = target.ops_private
        if not isinstance(state, _VaState) or state.gone:
            return ApplyResult(0, 0)
        pieces = self._mapped_pieces(ctx, state, start, end)
        if not pieces:
            return ApplyResult(0, 0)
        passed_bytes = 0
        if scheme.ops_filters:
            # DAMOS ops filters: act only on the pages that pass them
            try:
                pieces, passed_bytes = filter_process_ranges(state.pid, pieces, scheme)
            except ProcessLookupError:
                return ApplyResult(0, 0)
            if not pieces:
                return ApplyResult(0, passed_bytes)
        result: MadviseResult
        if state.pid == os.getpid():
            result = madvise(pieces, advice)
        elif advice not in REMOTE_ADVICE:
            raise ActionUnsupported(
                f"the {action} action cannot be applied to another process: the kernel's "
                "process_madvise(2) accepts only cold, pageout, willneed and collapse for other "
                "processes (monitor this process itself to use it)"
            )
        else:
            try:
                result = process_madvise(state.pidfd, pieces, advice)
            except ProcessLookupError:
                return ApplyResult(0, 0)
            except PermissionError:
                raise FeatureMissing(
                    f"process_madvise on process {state.pid} denied; run as root (CAP_SYS_NICE)"
                ) from None
        for err, n in result.errors.items():
            self.apply_errors[err] = self.apply_errors.get(err, 0) + n
        # Without ops filters the kernel's vaddr madvise actions report no ops-filter-passed
        # bytes; with them, the bytes of the pages that passed.
        return ApplyResult(result.sz_advised, passed_bytes)

    def cleanup(self, ctx: Context) -> None:
        for t in ctx.targets:
            state = t.ops_private
            if isinstance(state, _VaState):
                state.close()
        if self.phys is not None:
            self.phys.close()
            self.phys = None


def filter_process_ranges(
    pid: int | str, ranges: Iterable[tuple[int, int]], scheme: Scheme
) -> tuple[list[tuple[int, int]], int]:
    """The vaddr ops-filter path: cut ``ranges`` of process ``pid`` to the pages that pass
    ``scheme``'s ops filters. Returns the ranges to act on and the bytes that passed.

    Without ops filters the ranges are returned as they are (and 0 bytes "passed", as the
    kernel's vaddr madvise actions report).
    """
    ranges = list(ranges)
    if not scheme.ops_filters:
        return ranges, 0
    needed = needed_facts(scheme.filters)
    inos = pagefacts.memcg_inos(scheme.ops_filters)
    out: list[tuple[int, int]] = []
    passed_bytes = 0
    for lo, hi in ranges:
        facts = pagefacts.read_page_facts(pid, lo, hi, needed)
        passed = ops_filters_pass(scheme, facts, inos)
        passed_bytes += int(passed.sum()) * PAGE_SIZE
        out += passing_ranges(lo, passed)
    return out, passed_bytes


class FvaddrOperations(VaddrOperations):
    """Monitor fixed, user-given virtual address ranges of processes (``fvaddr``)."""

    name = "fvaddr"
    fixed_ranges = True
