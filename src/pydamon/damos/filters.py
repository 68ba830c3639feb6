"""DAMOS filters: the kernel's matching rules, and per-page facts for ops-layer filters.

Rules (``mm/damon/core.c``, ``ops-common.c``): core filters (``addr``, ``target``) are evaluated
on regions by the engine, ops filters (``anon``, ``active``, ``memcg``, ``young``,
``hugepage_size``, ``unmapped``) per page (folio) by the operations set. In each group the first
filter that matches decides (``allow`` applies, otherwise skip); memory no filter matched gets the
opposite of the last filter's ``allow``. A region a core filter explicitly allowed is allowed by
the ops filters too; with any ops filter installed, the core group's default is "allow" so the ops
filters get to decide.

Operations sets evaluate ops filters with :func:`ops_filters_pass` over :class:`PageFacts`, which
:func:`read_page_facts` (a process's pages via ``/proc/<pid>/pagemap``) or
:func:`page_facts_for_pfns` (physical pages) fill from ``/proc/kpageflags``,
``/proc/kpagecgroup`` and ``/sys/kernel/mm/page_idle/bitmap``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pydamon.damos.scheme import Filter, FilterType, Scheme
from pydamon.ops import _proc

PAGE_SIZE = 4096
HPAGE_PMD_SIZE = 2 << 20

# /proc/kpageflags bits (Documentation/admin-guide/mm/pagemap.rst)
KPF_LRU = 5
KPF_ACTIVE = 6
KPF_MMAP = 11
KPF_ANON = 12
KPF_COMPOUND_HEAD = 15
KPF_COMPOUND_TAIL = 16
KPF_HUGE = 17
KPF_THP = 22
KPF_IDLE = 25

# /proc/<pid>/pagemap bits
PM_PFN_MASK = (1 << 55) - 1
PM_EXCLUSIVE = 1 << 56
PM_FILE = 1 << 61
PM_SWAP = 1 << 62
PM_PRESENT = 1 << 63

BoolArray = npt.NDArray[np.bool_]
U64Array = npt.NDArray[np.uint64]


class FilterUnsupported(RuntimeError):
    """An ops filter needs a page fact this system or operations set cannot provide."""


def filters_default_reject(filters: Sequence[Filter]) -> bool:
    """``damos_filters_default_reject()``: reject unmatched memory iff the last filter allows."""
    return bool(filters) and filters[-1].allow


def set_filters_default_reject(scheme: Scheme) -> None:
    """``damos_set_filters_default_reject()``."""
    ops = scheme.ops_filters
    scheme.core_filters_default_reject = (
        False if ops else filters_default_reject(scheme.core_filters)
    )
    scheme.ops_filters_default_reject = filters_default_reject(ops)


@dataclass
class PageFacts:
    """Facts about consecutive pages (one entry per 4 KiB page) the ops filters look at.

    A fact left ``None`` was not collected; a filter that needs it raises
    :class:`FilterUnsupported`. ``present`` pages are backed by memory; non-present pages
    (swapped out, never touched) pass no ops filter and are not acted on.
    """

    present: BoolArray
    anon: BoolArray | None = None
    active: BoolArray | None = None
    #: cgroup v2 inode number of each page's memcg (``/proc/kpagecgroup``), 0 if none.
    memcg_ino: npt.NDArray[np.int64] | None = None
    young: BoolArray | None = None
    #: Size of the folio each page belongs to (bytes).
    folio_size: npt.NDArray[np.int64] | None = None
    unmapped: BoolArray | None = None

    def __len__(self) -> int:
        return int(self.present.shape[0])


def memcg_ino(path: str, cgroup_root: str = "/sys/fs/cgroup") -> int:
    """The inode number of a cgroup v2 directory, which ``/proc/kpagecgroup`` reports."""
    full = os.path.join(cgroup_root, path.lstrip("/"))
    try:
        return os.stat(full).st_ino
    except OSError as err:
        raise FilterUnsupported(
            f"memcg filter: cannot find cgroup {path!r} under {cgroup_root} ({err.strerror}); "
            "give a cgroup v2 path relative to the cgroup root"
        ) from None


def filter_match(
    f: Filter, facts: PageFacts, memcg_inos: dict[str, int] | None = None
) -> BoolArray:
    """``damos_folio_filter_match()`` for every page: does the page match filter ``f``?"""
    if f.type == FilterType.ANON:
        matched = _need(facts.anon, f)
    elif f.type == FilterType.ACTIVE:
        matched = _need(facts.active, f)
    elif f.type == FilterType.MEMCG:
        inos = _need(facts.memcg_ino, f)
        path = f.memcg_path or ""
        ino = (memcg_inos or {}).get(path)
        if ino is None:
            ino = memcg_ino(path)
        matched = inos == ino
    elif f.type == FilterType.YOUNG:
        matched = _need(facts.young, f)
    elif f.type == FilterType.HUGEPAGE_SIZE:
        sizes = _need(facts.folio_size, f)
        matched = (f.min_sz <= sizes) & (sizes <= f.max_sz)
    elif f.type == FilterType.UNMAPPED:
        matched = _need(facts.unmapped, f)
    else:
        raise ValueError(f"{f.type} is a core filter, not evaluated per page")
    matched = np.asarray(matched, dtype=bool)
    return matched if f.matching else ~matched


def _need(values: Any, f: Filter) -> Any:
    if values is None:
        raise FilterUnsupported(
            f"the {f.type} filter needs page information this operations set does not collect"
        )
    return values


def ops_filters_pass(
    scheme: Scheme,
    facts: PageFacts,
    memcg_inos: dict[str, int] | None = None,
    *,
    extra_filters: Sequence[Filter] = (),
) -> BoolArray:
    """Which pages pass ``scheme``'s ops filters (``damos_pa_filter_out()`` negated).

    Non-present pages never pass. If the region's core filters explicitly allowed it
    (``scheme.core_filters_allowed``), every present page passes. ``extra_filters`` are
    evaluated after the scheme's own, as an action's temporary filters are in the kernel (paddr
    pageout's reject-young filter); the default for unmatched pages stays the scheme's.
    """
    present = np.asarray(facts.present, dtype=bool)
    if scheme.core_filters_allowed:
        return present.copy()
    ops = [*scheme.ops_filters, *extra_filters]
    decided = np.zeros(len(facts), dtype=bool)
    passed = np.zeros(len(facts), dtype=bool)
    for f in ops:
        matched = filter_match(f, facts, memcg_inos) & ~decided
        passed[matched] = f.allow
        decided |= matched
    passed[~decided] = not scheme.ops_filters_default_reject
    return passed & present


def needed_facts(filters: Iterable[Filter]) -> set[FilterType]:
    return {f.type for f in filters if not f.handled_by_core}


# -- reading page facts from /proc and /sys ----------------------------------------------------


def read_pagemap(pid: int | str, start: int, end: int) -> U64Array:
    """The pagemap entries of ``[start, end)`` of a process (one u64 per page)."""
    nr_pages = (end - start) // PAGE_SIZE
    with open(f"/proc/{pid}/pagemap", "rb", buffering=0) as f:
        data = os.pread(f.fileno(), nr_pages * 8, (start // PAGE_SIZE) * 8)
    out = np.frombuffer(data, dtype=np.uint64)
    if out.shape[0] < nr_pages:  # range past the end of the address space
        out = np.concatenate([out, np.zeros(nr_pages - out.shape[0], np.uint64)])
    return out


def _read_per_pfn(path: str, pfns: npt.NDArray[np.int64]) -> U64Array:
    """One u64 per pfn from a pfn-indexed file, reading each contiguous pfn run at once."""
    out = np.zeros(pfns.shape[0], dtype=np.uint64)
    if not pfns.shape[0]:
        return out
    order = np.argsort(pfns, kind="stable")
    sorted_pfns = pfns[order]
    breaks = np.flatnonzero(np.diff(sorted_pfns) > 1) + 1
    fd = os.open(path, os.O_RDONLY)
    try:
        for run in np.split(np.arange(sorted_pfns.shape[0]), breaks):
            first = int(sorted_pfns[run[0]])
            last = int(sorted_pfns[run[-1]])
            data = os.pread(fd, (last - first + 1) * 8, first * 8)
            words = np.frombuffer(data, dtype=np.uint64)
            idx = sorted_pfns[run] - first
            ok = idx < words.shape[0]
            out[order[run[ok]]] = words[idx[ok]]
    finally:
        os.close(fd)
    return out


def read_idle(pfns: npt.NDArray[np.int64]) -> BoolArray:
    """The page_idle bit of each pfn."""
    words = _read_per_pfn("/sys/kernel/mm/page_idle/bitmap", pfns // 64)
    return ((words >> (pfns % 64).astype(np.uint64)) & np.uint64(1)).astype(bool)


def set_idle(pfns: npt.NDArray[np.int64]) -> None:
    """Mark pages idle (clears their accessed state, as ``damon_folio_mkold()``)."""
    if not pfns.shape[0]:
        return
    fd = os.open("/sys/kernel/mm/page_idle/bitmap", os.O_WRONLY)
    try:
        _proc.mark_idle(fd, pfns)
    finally:
        os.close(fd)


def _folio_sizes(flags: U64Array, pfns: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Folio size of each page: THP pages are PMD-sized; other compound pages count their run."""
    sizes = np.full(flags.shape[0], PAGE_SIZE, dtype=np.int64)
    head = ((flags >> np.uint64(KPF_COMPOUND_HEAD)) & np.uint64(1)).astype(bool)
    tail = ((flags >> np.uint64(KPF_COMPOUND_TAIL)) & np.uint64(1)).astype(bool)
    thp = ((flags >> np.uint64(KPF_THP)) & np.uint64(1)).astype(bool)
    sizes[thp] = HPAGE_PMD_SIZE
    # mTHP / other large folios: a head followed by tails at consecutive pfns
    i = 0
    n = flags.shape[0]
    compound = (head | tail) & ~thp
    while i < n:
        if not compound[i]:
            i += 1
            continue
        j = i + 1
        while j < n and tail[j] and not head[j] and pfns[j] == pfns[j - 1] + 1:
            j += 1
        sizes[i:j] = (j - i) * PAGE_SIZE if head[i] else sizes[i:j]
        i = j
    return sizes


def page_facts_for_pfns(
    pfns: npt.NDArray[np.int64],
    present: BoolArray,
    needed: set[FilterType],
    *,
    anon_hint: BoolArray | None = None,
) -> PageFacts:
    """Collect the facts ``needed`` filters use for physical pages ``pfns``.

    Reading ``young`` clears it (marks the pages idle), as the kernel's young filter does.
    Raises :class:`FilterUnsupported` with what is missing (e.g. no root, no page_idle).
    """
    facts = PageFacts(present=present)
    pfns = np.asarray(pfns, dtype=np.int64)
    live = pfns[present]
    flags_needed = needed & {
        FilterType.ANON,
        FilterType.ACTIVE,
        FilterType.HUGEPAGE_SIZE,
        FilterType.UNMAPPED,
    }
    if flags_needed:
        try:
            flags = np.zeros(pfns.shape[0], np.uint64)
            flags[present] = _read_per_pfn("/proc/kpageflags", live)
        except OSError as err:
            raise FilterUnsupported(
                f"{', '.join(sorted(flags_needed))} filter needs /proc/kpageflags "
                f"({err.strerror}); run as root"
            ) from None

        def bit(b: int) -> BoolArray:
            return ((flags >> np.uint64(b)) & np.uint64(1)).astype(bool)

        facts.anon = bit(KPF_ANON) if anon_hint is None else anon_hint
        facts.active = bit(KPF_ACTIVE)
        facts.unmapped = ~bit(KPF_MMAP)
        facts.folio_size = _folio_sizes(flags, pfns)
    if FilterType.MEMCG in needed:
        try:
            cg = np.zeros(pfns.shape[0], np.uint64)
            cg[present] = _read_per_pfn("/proc/kpagecgroup", live)
        except OSError as err:
            raise FilterUnsupported(
                f"memcg filter needs /proc/kpagecgroup ({err.strerror}); run as root on a kernel "
                "with CONFIG_MEMCG"
            ) from None
        facts.memcg_ino = cg.astype(np.int64)
    if FilterType.YOUNG in needed:
        try:
            young = np.zeros(pfns.shape[0], bool)
            young[present] = ~read_idle(live)
            set_idle(pfns[young])
        except OSError as err:
            raise FilterUnsupported(
                f"young filter needs /sys/kernel/mm/page_idle/bitmap ({err.strerror}); "
                "needs root and CONFIG_IDLE_PAGE_TRACKING"
            ) from None
        facts.young = young
    return facts


def read_page_facts(pid: int | str, start: int, end: int, needed: set[FilterType]) -> PageFacts:
    """Facts for the pages of ``[start, end)`` of process ``pid`` (from its pagemap).

    Pages not present in memory (swapped out or never touched) are not ``present``.
    """
    try:
        entries = read_pagemap(pid, start, end)
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessLookupError(f"process {pid} is gone") from None
    except OSError as err:
        raise FilterUnsupported(
            f"ops filters need /proc/{pid}/pagemap ({err.strerror}); the process must exist and "
            "be ours or we must be root"
        ) from None
    present = (entries & np.uint64(PM_PRESENT)) != 0
    pfns = (entries & np.uint64(PM_PFN_MASK)).astype(np.int64)
    if needed and present.any() and not pfns[present].any():
        raise FilterUnsupported("ops filters need page frame numbers from pagemap; run as root")
    # A present, private page mapped through a file-less mapping is anonymous; kpageflags says so
    # too, but pagemap answers without root.
    anon_hint = present & ((entries & np.uint64(PM_FILE)) == 0)
    if needed - {FilterType.ANON}:
        return page_facts_for_pfns(pfns, present, needed, anon_hint=anon_hint)
    return PageFacts(present=present, anon=anon_hint)


def passing_ranges(start: int, passed: BoolArray) -> list[tuple[int, int]]:
    """Address ranges of the runs of passing pages (``passed[i]`` is page ``start + i*4K``)."""
    if not passed.shape[0]:
        return []
    edges = np.flatnonzero(np.diff(np.concatenate(([0], passed.astype(np.int8), [0]))))
    return [
        (start + int(lo) * PAGE_SIZE, start + int(hi) * PAGE_SIZE)
        for lo, hi in zip(edges[::2], edges[1::2])
    ]


def filter_process_ranges(
    pid: int | str, ranges: Iterable[tuple[int, int]], scheme: Scheme
) -> tuple[list[tuple[int, int]], int]:
    """For a vaddr operations set: cut ``ranges`` of process ``pid`` to the pages that pass
    ``scheme``'s ops filters. Returns the ranges to act on and the bytes that passed.

    Without ops filters the ranges are returned as they are (and 0 bytes "passed", as the
    kernel's vaddr madvise actions report).
    """
    ranges = list(ranges)
    if not scheme.ops_filters:
        return ranges, 0
    needed = needed_facts(scheme.filters)
    out: list[tuple[int, int]] = []
    passed_bytes = 0
    for lo, hi in ranges:
        facts = read_page_facts(pid, lo, hi, needed)
        passed = ops_filters_pass(scheme, facts)
        passed_bytes += int(passed.sum()) * PAGE_SIZE
        out += passing_ranges(lo, passed)
    return out, passed_bytes


#: The ops filters :func:`filter_process_ranges` evaluates (for ``supported_ops_filters``).
PROCESS_OPS_FILTERS = frozenset(
    {
        FilterType.ANON,
        FilterType.ACTIVE,
        FilterType.MEMCG,
        FilterType.YOUNG,
        FilterType.HUGEPAGE_SIZE,
        FilterType.UNMAPPED,
    }
)
