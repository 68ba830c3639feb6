"""The physical address space (the kernel's ``paddr`` operations set).

Targets are ranges of physical memory: a target's ``ranges`` (physical addresses), or by default
the largest ``System RAM`` range of ``/proc/iomem`` (what DAMON_RECLAIM monitors). The access
check of a region uses the page frame of its sampling address directly: its idle bit in
``/sys/kernel/mm/page_idle/bitmap`` is set at prepare time and read back at check time (the
kernel's rmap walk, done by the page_idle code). Page frames not on an LRU list (free, kernel,
page-table pages...) count as not accessed, as in the kernel's paddr; THP tail frames use their
head's bit.

Actions: ``stat``, ``pageout`` and ``lru_deprio``. The kernel's paddr ``pageout`` isolates the
folios of the range and calls ``reclaim_pages()``; user space can only page out through
``process_madvise(MADV_PAGEOUT)``, which needs the owning process and virtual address. So pageout
here goes through a reverse map (:mod:`pydamon.ops._rmap`) from page frame to ``(pid, vaddr)``,
built by scanning every process's pagemap, at most once per ops-update interval (at the first
action after :meth:`PaddrOperations.update` marked it stale), never per sample. For a region:
the frames in it that exactly one process maps pass the ops filters (as the kernel, a temporary
reject-``young`` filter is added unless the scheme has a ``young`` filter), are grouped by
process, merged into runs of consecutive addresses, re-checked against the pagemap (pages move
between the build and the apply), and advised in batches of at most 1024 ranges; failures are
counted per errno in :attr:`PaddrOperations.apply_errors`, never fatal. ``sz_applied`` is the
bytes advised; ``sz_ops_filter_passed`` the bytes of reachable pages that passed the filters.

Frames no process maps (page cache nobody maps, free and kernel memory) cannot be reached from
user space and are not applied. Frames mapped more than once are skipped too: MADV_PAGEOUT leaves
folios mapped more than once alone (``madvise_cold_or_pageout_pte_range()``), where the kernel's
paddr pageout would unmap and reclaim them. ``lru_deprio`` takes the same path with
``MADV_COLD``, which deactivates the folios (``folio_deactivate()``, what the kernel's paddr
``lru_deprio`` calls), without the young filter. ``lru_prio``/``migrate_*`` are refused (no
user-space interface activates arbitrary frames or moves them between nodes).
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from pydamon.core.budget import DEFAULT_REAL_CPU_BUDGET_PERCENT
from pydamon.core.errors import FeatureMissing
from pydamon.core.operations import ApplyResult, update_regions_access
from pydamon.core.regions import PAGE_SIZE, Regions, align_down, align_up
from pydamon.damos.filters import needed_facts, ops_filters_pass
from pydamon.damos.scheme import Filter, FilterType, Scheme
from pydamon.ops import _native, _proc, _rmap, pagefacts
from pydamon.ops.madvise import MADV, pidfd_open, process_madvise
from pydamon.ops.probe import require
from pydamon.ops.scoring import DamosOperations
from pydamon.ops.vaddr import ActionUnsupported, evenly_split_init

if TYPE_CHECKING:
    from pydamon.core.context import Context, Target

PADDR_ACTIONS = ("stat", "pageout", "lru_deprio")
#: DAMOS ops-layer filters the pageout path evaluates per page (kpageflags, kpagecgroup, page_idle)
PADDR_OPS_FILTERS = pagefacts.OPS_FILTERS


def default_paddr_range() -> tuple[int, int]:
    """The largest System RAM range of /proc/iomem (raises FeatureMissing if hidden)."""
    try:
        with open("/proc/iomem") as f:
            text = f.read()
    except OSError as err:
        raise FeatureMissing(f"cannot read /proc/iomem: {err.strerror}; run as root") from None
    ram = _proc.largest_system_ram(text)
    if ram is None:
        raise FeatureMissing(
            "/proc/iomem shows no System RAM addresses (hidden from non-root readers); "
            "run as root or give the physical ranges to monitor"
        )
    return ram


class PaddrOperations(DamosOperations):
    """Monitor physical memory (``paddr``)."""

    name = "paddr"
    supported_ops_filters = PADDR_OPS_FILTERS

    def __init__(self, *, native: bool = True) -> None:
        #: use the C helper for the per-sample loop when it can be built (see ops._native)
        self.native = native
        self.phys: pagefacts.PhysPages | None = None
        #: frame -> (pid, vaddr) map of the pageout path; None until first needed
        self.rmap: _rmap.ReverseMap | None = None
        self.rmap_stale = True
        #: number of reverse-map builds so far (each costs a scan of all mapped memory)
        self.nr_rmap_builds = 0
        #: ranges an action failed on, per errno (counted, never fatal)
        self.apply_errors: dict[int, int] = {}

    def default_cpu_budget(self) -> float | None:
        # real memory: bounded cost by default (docs/real-memory.md says why 5%)
        return DEFAULT_REAL_CPU_BUDGET_PERCENT

    def init(self, ctx: Context) -> None:
        require(self.name)
        for s in ctx.schemes:
            action = str(getattr(s, "action", "stat"))
            if action not in PADDR_ACTIONS:
                raise ActionUnsupported(_unsupported(action))
            if action == "stat" and getattr(s, "ops_filters", None):
                raise ActionUnsupported(
                    "the paddr operations set of pydamon evaluates ops filters (anon, memcg...) "
                    "only for pageout and lru_deprio; remove them from the stat scheme or monitor "
                    "with vaddr"
                )
        try:
            self.phys = pagefacts.PhysPages()
        except PermissionError:
            raise FeatureMissing(
                f"paddr monitoring needs write access to {pagefacts.PAGE_IDLE_BITMAP}; run as root"
            ) from None
        for t in ctx.targets:
            # the per-sample access checks of this target (sampling addresses, PFNs checked)
            t.ops_private = _native.Sampler(ctx.rng, self.native)
            if len(t.regions):
                continue
            ranges = t.ranges or [default_paddr_range()]
            t.regions = Regions(
                [
                    (align_down(s, ctx.min_region_sz), align_up(e, ctx.min_region_sz))
                    for s, e in sorted(ranges)
                ]
            )
            evenly_split_init(t.regions, ctx.attrs.min_nr_regions, ctx.min_region_sz)
        if any(str(getattr(s, "action", "stat")) != "stat" for s in ctx.schemes):
            # fail at start, in one line, where the actions cannot work (no PFNs, not root)
            try:
                self._fresh_rmap()
            except BaseException:
                self.cleanup(ctx)
                raise

    def update(self, ctx: Context) -> None:
        # Rebuilt lazily, at the next action: an interval without actions costs nothing.
        self.rmap_stale = True

    def prepare_access_checks(self, ctx: Context) -> None:
        assert self.phys is not None
        for t in ctx.targets:
            if isinstance(t.ops_private, _native.Sampler):
                t.ops_private.pick_prepare(self.phys, None, t.regions)

    def check_accesses(self, ctx: Context) -> int:
        assert self.phys is not None
        max_nr_accesses = 0
        for t in ctx.targets:
            sampler = t.ops_private
            if isinstance(sampler, _native.Sampler):
                nr = sampler.check_update(self.phys, t.regions, ctx.attrs.max_nr_accesses)
            else:
                nr = update_regions_access(ctx, t, np.zeros(len(t.regions), np.bool_))
            max_nr_accesses = max(max_nr_accesses, nr)
        return max_nr_accesses

    def apply_scheme(
        self, ctx: Context, target: Target, start: int, end: int, scheme: Scheme
    ) -> ApplyResult:
        action = scheme.action
        if action == "stat":
            return ApplyResult(0, 0)
        if action == "pageout":
            return self.pageout(start, end, scheme)
        if action == "lru_deprio":
            return self.deactivate(start, end, scheme)
        raise ActionUnsupported(_unsupported(action))

    # -- pageout through the reverse map ---------------------------------------------------------
    def _fresh_rmap(self) -> _rmap.ReverseMap:
        if self.rmap is None or self.rmap_stale:
            self.rmap = _rmap.build_reverse_map()
            self.rmap_stale = False
            self.nr_rmap_builds += 1
        return self.rmap

    def pageout(self, start: int, end: int, scheme: Any) -> ApplyResult:
        """Page out the process-mapped frames of ``[start, end)`` that pass the ops filters
        (``damon_pa_pageout()``: with a temporary reject-young filter)."""
        return self._advise_frames(start, end, scheme, MADV["pageout"], reject_young=True)

    def deactivate(self, start: int, end: int, scheme: Any) -> ApplyResult:
        """Move the process-mapped frames of ``[start, end)`` that pass the ops filters to the
        inactive LRU list: ``MADV_COLD`` calls ``folio_deactivate()``, as the kernel's paddr
        ``lru_deprio`` does (``damon_pa_deactivate_pages()``, no young filter of its own)."""
        return self._advise_frames(start, end, scheme, MADV["cold"], reject_young=False)

    def _advise_frames(
        self, start: int, end: int, scheme: Any, advice: int, *, reject_young: bool
    ) -> ApplyResult:
        rmap = self._fresh_rmap()
        sl = rmap.lookup(start, end)
        # frames mapped more than once: MADV_PAGEOUT/MADV_COLD skip them (see the module doc)
        own = ~rmap.shared[sl]
        pfns, pids, vaddrs = rmap.pfns[sl][own], rmap.pids[sl][own], rmap.vaddrs[sl][own]
        if not pfns.shape[0]:
            return ApplyResult(0, 0)
        passed = self.filters_pass(scheme, pfns, reject_young=reject_young)
        passed_bytes = int(passed.sum()) * PAGE_SIZE
        sz_applied = 0
        for pid, pid_vaddrs, pid_pfns in _rmap.group_by_pid(
            pids[passed], vaddrs[passed], pfns[passed]
        ):
            sz_applied += self._advise(pid, pid_vaddrs, pid_pfns, advice)
        return ApplyResult(sz_applied, passed_bytes)

    def _advise(self, pid: int, vaddrs: Any, pfns: Any, advice: int) -> int:
        """Advise the pages of process ``pid`` (ascending ``vaddrs``) that still map the frames
        ``pfns``, merged into ranges; returns the bytes advised."""
        try:
            pidfd = pidfd_open(pid)
        except ProcessLookupError:
            return 0  # exited since the map was built
        except PermissionError:
            raise FeatureMissing(
                f"cannot act on process {pid} (pidfd_open denied); run as root"
            ) from None
        try:
            try:
                pagemap = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
            except (FileNotFoundError, ProcessLookupError):
                return 0
            try:
                ranges = _rmap.verified_ranges(pagemap, vaddrs, pfns)
            finally:
                os.close(pagemap)
            if not ranges:
                return 0
            try:
                result = process_madvise(pidfd, ranges, advice)
            except ProcessLookupError:
                return 0
            except PermissionError:
                raise FeatureMissing(
                    f"process_madvise on process {pid} denied; run as root (CAP_SYS_NICE)"
                ) from None
            except OSError as err:
                if err.errno == errno.ESRCH:
                    return 0
                raise
        finally:
            os.close(pidfd)
        for err_no, n in result.errors.items():
            self.apply_errors[err_no] = self.apply_errors.get(err_no, 0) + n
        return result.sz_advised

    def filters_pass(self, scheme: Scheme, pfns: Any, *, reject_young: bool = True) -> Any:
        """Which frames pass ``scheme``'s ops filters, and with ``reject_young`` the kernel's
        temporary reject-young filter of paddr pageout (``damon_pa_pageout()``), in the kernel's
        order: the user's filters first, the first match decides, then the default of the user's
        filters. Reading ``young`` marks the young folios idle, as the kernel's filter does."""
        n = pfns.shape[0]
        if scheme.core_filters_allowed:
            return np.ones(n, np.bool_)
        extra = []
        if reject_young and not any(f.type == FilterType.YOUNG for f in scheme.ops_filters):
            extra.append(Filter(type=FilterType.YOUNG, matching=True, allow=False))
        needed = needed_facts([*scheme.ops_filters, *extra])
        facts = pagefacts.page_facts_for_pfns(pfns, np.ones(n, np.bool_), needed)
        inos = pagefacts.memcg_inos(scheme.ops_filters)
        return ops_filters_pass(scheme, facts, inos, extra_filters=extra)

    def cleanup(self, ctx: Context) -> None:
        self.rmap = None
        if self.phys is not None:
            self.phys.close()
            self.phys = None


def _unsupported(action: str) -> str:
    return (
        f"the paddr operations set of pydamon cannot apply {action}: user space has no interface "
        "that activates arbitrary page frames or moves them between nodes; use pageout, "
        "lru_deprio or stat, or monitor the process with vaddr to use cold/willneed"
    )
