"""The physical address space (the kernel's ``paddr`` operations set).

Targets are ranges of physical memory: a target's ``ranges`` (physical addresses), or by default
the largest ``System RAM`` range of ``/proc/iomem`` (what DAMON_RECLAIM monitors). The access
check of a region uses the page frame of its sampling address directly: its idle bit in
``/sys/kernel/mm/page_idle/bitmap`` is set at prepare time and read back at check time (the
kernel's rmap walk, done by the page_idle code). Page frames not on an LRU list (free, kernel,
page-table pages...) count as not accessed, as in the kernel's paddr; THP tail frames use their
head's bit.

Actions: only ``stat``. The kernel's paddr ``pageout``/``lru_prio``/``lru_deprio``/``migrate_*``
act on page frames (``reclaim_pages()``, ``folio_mark_accessed()``...), and user space has no
interface that does that for arbitrary frames: process_madvise needs the owning process and
virtual address, and Linux offers no reverse map from a frame to them short of scanning every
process's page tables. They are refused with a clear error rather than approximated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from pydamon.core.regions import Regions, align_down, align_up
from pydamon.features import FeatureMissing, require
from pydamon.ops import _native, _proc
from pydamon.ops.base import ApplyResult, Operations, update_regions_access
from pydamon.ops.vaddr import ActionUnsupported, evenly_split_init

if TYPE_CHECKING:
    from pydamon.core.context import Context, Target

PADDR_ACTIONS = ("stat",)


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


class PaddrOperations(Operations):
    """Monitor physical memory (``paddr``)."""

    name = "paddr"

    def __init__(self, *, native: bool = True) -> None:
        #: use the C helper for the per-sample loop when it can be built (see ops._native)
        self.native = native
        self.phys: _proc.PhysPages | None = None

    def init(self, ctx: Context) -> None:
        require(self.name)
        for s in ctx.schemes:
            action = str(getattr(s, "action", "stat"))
            if action not in PADDR_ACTIONS:
                raise ActionUnsupported(_unsupported(action))
        try:
            self.phys = _proc.PhysPages()
        except PermissionError:
            raise FeatureMissing(
                f"paddr monitoring needs write access to {_proc.PAGE_IDLE_BITMAP}; run as root"
            ) from None
        for t in ctx.targets:
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
            t.ops_private = np.zeros(0, np.int64)

    def prepare_access_checks(self, ctx: Context) -> None:
        assert self.phys is not None
        for t in ctx.targets:
            addrs = t.regions.pick_sampling_addrs(ctx.rng)
            t.ops_private = _native.prepare(self.phys, None, addrs, self.native)

    def check_accesses(self, ctx: Context) -> int:
        assert self.phys is not None
        max_nr_accesses = 0
        for t in ctx.targets:
            pfns = t.ops_private
            if isinstance(pfns, np.ndarray) and len(pfns) == len(t.regions):
                accessed = _native.check(self.phys, pfns, self.native)
            else:
                accessed = np.zeros(len(t.regions), np.bool_)
            max_nr_accesses = max(max_nr_accesses, update_regions_access(ctx, t, accessed))
        return max_nr_accesses

    def apply_scheme(
        self, ctx: Context, target: Target, start: int, end: int, scheme: Any
    ) -> ApplyResult:
        action = str(getattr(scheme, "action", scheme))
        if action == "stat":
            return ApplyResult(0, 0)
        raise ActionUnsupported(_unsupported(action))

    def cleanup(self, ctx: Context) -> None:
        if self.phys is not None:
            self.phys.close()
            self.phys = None


def _unsupported(action: str) -> str:
    return (
        f"the paddr operations set of pydamon cannot apply {action}: user space cannot act on "
        "arbitrary page frames; monitor the process with vaddr to use pageout/cold/willneed, or "
        "use stat"
    )
