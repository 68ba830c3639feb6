"""Readers of the kernel's memory interfaces: /proc/PID/maps, /proc/iomem, pagemap, kpageflags
and the page_idle bitmap.

Everything here is vectorised over numpy arrays of addresses or PFNs: one ``pread``/``pwrite``
per distinct 8-byte entry needed (``pagemap`` and ``kpageflags`` are indexed by page, the idle
bitmap by 64-page word; entries adjacent in the file are read in one call), never a walk over a
monitored range.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pydamon.core.regions import PAGE_SIZE, align_down, align_up

IntArray = npt.NDArray[np.int64]
U64Array = npt.NDArray[np.uint64]
BoolArray = npt.NDArray[np.bool_]

PAGE_SHIFT = 12
PAGE_IDLE_BITMAP = "/sys/kernel/mm/page_idle/bitmap"
KPAGEFLAGS = "/proc/kpageflags"

# pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst)
PM_PFN_MASK = (1 << 55) - 1
PM_SWAPPED = 1 << 62
PM_PRESENT = 1 << 63

# kpageflags bits
KPF_LRU = 5
KPF_COMPOUND_HEAD = 15
KPF_COMPOUND_TAIL = 16
KPF_HUGE = 17
KPF_NOPAGE = 20
KPF_THP = 22
KPF_IDLE = 25

#: Above the user address space (the [vsyscall] page lives there; int64 cannot hold it).
USER_ADDR_LIMIT = 1 << 63
#: Largest folio whose head we look for (a PMD-mapped THP: order 9, 512 pages on x86-64).
MAX_FOLIO_ORDER = 9


# -- /proc/PID/maps ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mapping:
    """One line of ``/proc/PID/maps``."""

    start: int
    end: int
    perms: str = "rw-p"
    path: str = ""


def parse_maps(text: str) -> list[Mapping]:
    """Parse ``/proc/PID/maps`` text into mappings (sorted by address, as the kernel prints)."""
    out = []
    for line in text.splitlines():
        fields = line.split(None, 5)
        if len(fields) < 5:
            continue
        lo, _, hi = fields[0].partition("-")
        out.append(
            Mapping(int(lo, 16), int(hi, 16), fields[1], fields[5] if len(fields) > 5 else "")
        )
    return out


def read_maps(pid: int) -> list[Mapping]:
    """The mappings of process ``pid``; raises ``ProcessLookupError`` if it is gone."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            text = f.read()
    except FileNotFoundError:
        raise ProcessLookupError(errno.ESRCH, f"process {pid} does not exist") from None
    except ProcessLookupError:
        raise ProcessLookupError(errno.ESRCH, f"process {pid} exited") from None
    return user_mappings(parse_maps(text))


def user_mappings(mappings: Sequence[Mapping]) -> list[Mapping]:
    """The process's own VMAs: without the ``[vsyscall]`` gate page, which is no VMA."""
    return [m for m in mappings if m.end <= USER_ADDR_LIMIT and m.path != "[vsyscall]"]


def three_regions(
    mappings: Sequence[Mapping] | Sequence[tuple[int, int]], min_region_sz: int = PAGE_SIZE
) -> list[tuple[int, int]] | None:
    """The kernel vaddr's three regions: all mappings minus the two biggest unmapped gaps.

    ``__damon_va_three_regions()``: ``[first.start, gap1.start)``, ``[gap1.end, gap2.start)``,
    ``[gap2.end, last.end)``, aligned outwards. A gap replaces the biggest only if strictly
    bigger (the earlier gap wins ties). None where the kernel fails (fewer than two gaps).
    """
    spans = [(m.start, m.end) if isinstance(m, Mapping) else (m[0], m[1]) for m in mappings]
    if not spans:
        return None
    first = second = (0, 0)
    prev_end = None
    for start, end in spans:
        if prev_end is not None:
            gap = start - prev_end
            if gap > first[1] - first[0]:
                second = first
                first = (prev_end, start)
            elif gap > second[1] - second[0]:
                second = (prev_end, start)
        prev_end = end
    assert prev_end is not None
    if first[1] == first[0] or second[1] == second[0]:
        return None
    gap1, gap2 = sorted((first, second))
    regions = [
        (align_down(spans[0][0], min_region_sz), align_up(gap1[0], min_region_sz)),
        (align_down(gap1[1], min_region_sz), align_up(gap2[0], min_region_sz)),
        (align_down(gap2[1], min_region_sz), align_up(prev_end, min_region_sz)),
    ]
    for i, (s, e) in enumerate(regions):
        if e <= s or (i and regions[i - 1][1] >= s):
            return None
    return regions


# -- /proc/iomem ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class IomemRange:
    start: int
    #: exclusive (iomem prints inclusive ends)
    end: int
    name: str
    depth: int


def parse_iomem(text: str) -> list[IomemRange]:
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        span, _, name = line.strip().partition(" : ")
        lo, _, hi = span.partition("-")
        try:
            out.append(IomemRange(int(lo, 16), int(hi, 16) + 1, name.strip(), depth))
        except ValueError:
            continue
    return out


def system_ram_ranges(text: str) -> list[tuple[int, int]]:
    """Top-level ``System RAM`` ranges of ``/proc/iomem`` text."""
    return [(r.start, r.end) for r in parse_iomem(text) if r.depth == 0 and r.name == "System RAM"]


def largest_system_ram(text: str) -> tuple[int, int] | None:
    """The biggest ``System RAM`` range (what DAMON_RECLAIM monitors by default)."""
    ranges = system_ram_ranges(text)
    if not ranges or all(s == 0 and e <= 1 for s, e in ranges):
        return None  # none, or addresses hidden (non-root readers see zeros)
    return max(ranges, key=lambda r: (r[1] - r[0], -r[0]))


# -- batched 8-byte entry files -------------------------------------------------------------------


def _runs(indices: IntArray) -> list[tuple[int, int, int]]:
    """Split sorted unique ``indices`` into runs of consecutive values: (first, count, pos)."""
    if not len(indices):
        return []
    breaks = np.flatnonzero(np.diff(indices) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [len(indices)]))
    first = indices[starts].tolist()
    return list(zip(first, (ends - starts).tolist(), starts.tolist()))


def read_entries(fd: int, indices: IntArray) -> U64Array:
    """Read the 8-byte entries ``indices`` of an entry file (pagemap, kpageflags, bitmap).

    Entries that cannot be read (past the end, a process gone) read as 0.
    """
    if not len(indices):
        return np.zeros(0, np.uint64)
    uniq, inverse = np.unique(indices, return_inverse=True)
    values = np.zeros(len(uniq), np.uint64)
    for first, count, pos in _runs(uniq):
        try:
            data = os.pread(fd, 8 * count, 8 * first)
        except OSError:
            continue
        n = len(data) // 8
        if n:
            values[pos : pos + n] = np.frombuffer(data[: 8 * n], np.uint64)
    return values[inverse]


def mark_idle(bitmap_fd: int, pfns: IntArray) -> None:
    """Set the page_idle bits of ``pfns`` (an array; which clears their young bits in the page
    tables): one write per run of consecutive 64-frame words. A word that cannot be written
    (past the end of memory) is skipped: nothing to mark there."""
    if not pfns.shape[0]:
        return
    words, inverse = np.unique(pfns >> 6, return_inverse=True)
    masks = np.zeros(words.shape[0], np.uint64)
    np.bitwise_or.at(masks, inverse, np.uint64(1) << (pfns & 63).astype(np.uint64))
    for first, count, pos in _runs(words):
        try:
            os.pwrite(bitmap_fd, masks[pos : pos + count].tobytes(), first << 3)
        except OSError:
            continue


# -- pagemap ---------------------------------------------------------------------------------------


class Pagemap:
    """``/proc/PID/pagemap`` of one process, kept open."""

    def __init__(self, pid: int | str) -> None:
        self.pid = pid
        try:
            self.fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
        except FileNotFoundError:
            raise ProcessLookupError(errno.ESRCH, f"process {pid} does not exist") from None

    def entries(self, addrs: IntArray) -> U64Array:
        return read_entries(self.fd, addrs >> PAGE_SHIFT)

    def pfns(self, addrs: Sequence[int]) -> list[int]:
        """PFN of the page at each address; -1 where not present (or the process is gone).

        A present page whose PFN reads as 0 (hidden from unprivileged readers) gives 0.
        """
        fd = self.fd
        out = []
        for addr in addrs:
            entry = _read_u64(fd, addr >> PAGE_SHIFT)
            out.append(entry & PM_PFN_MASK if entry & PM_PRESENT else -1)
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def decode_pagemap(entries: U64Array) -> tuple[IntArray, BoolArray, BoolArray]:
    """``(pfns, present, swapped)`` of pagemap entries (pfn is -1 where not present)."""
    present = (entries & np.uint64(PM_PRESENT)) != 0
    swapped = (entries & np.uint64(PM_SWAPPED)) != 0
    pfns = (entries & np.uint64(PM_PFN_MASK)).astype(np.int64)
    pfns[~present] = -1
    return pfns, present, swapped


# -- kpageflags and the idle bitmap --------------------------------------------------------------


def flag(flags: U64Array, bit: int) -> BoolArray:
    return (flags >> np.uint64(bit)) & np.uint64(1) != 0


def _read_u64(fd: int, index: int) -> int:
    """One 8-byte entry (0 if it cannot be read)."""
    try:
        data = os.pread(fd, 8, index << 3)
    except OSError:
        return 0
    return int.from_bytes(data, "little") if len(data) == 8 else 0


class PhysPages:
    """``/proc/kpageflags`` and the page_idle bitmap, kept open.

    The per-sample methods take and return plain lists: for the few hundred entries of one
    sample, a Python loop around ``pread`` is cheaper than numpy's per-call overhead (which is
    large under emulation).
    """

    #: the io_uring of the C helper's batched path (``_native.Ring``), opened on first use
    ring: Any = None
    ring_tried: bool = False

    def __init__(self) -> None:
        self.kpageflags_fd = os.open(KPAGEFLAGS, os.O_RDONLY)
        try:
            self.bitmap_fd = os.open(PAGE_IDLE_BITMAP, os.O_RDWR)
        except OSError:
            os.close(self.kpageflags_fd)
            raise

    def flags(self, pfn: int) -> int:
        return _read_u64(self.kpageflags_fd, pfn)

    def folio_head(self, pfn: int) -> tuple[int, int]:
        """The head PFN and flags of the compound page (THP) ``pfn`` is a tail page of.

        Folios are naturally aligned: the head of an order-k folio is ``pfn & ~(2**k - 1)``, so
        the head is the first of the aligned candidates (orders 1..9) that is a head page.
        ``(-1, 0)`` if none is (e.g. a bigger hugetlb page).
        """
        for order in range(1, MAX_FOLIO_ORDER + 1):
            head = pfn & ~((1 << order) - 1)
            flags = self.flags(head)
            if flags >> KPF_COMPOUND_HEAD & 1:
                return head, flags
        return -1, 0

    def trackable(self, pfn: int) -> int:
        """The PFN whose idle bit tracks ``pfn``'s page, or -1 if page_idle cannot track it.

        page_idle tracks LRU folios through their head page: a THP tail maps to its head; a
        page off the LRU lists (free, kernel, still in a per-CPU LRU-add batch) is untrackable.
        """
        flags = self.flags(pfn)
        if flags >> KPF_COMPOUND_TAIL & 1:
            pfn, flags = self.folio_head(pfn)
        return pfn if flags >> KPF_LRU & 1 else -1

    def mark_idle(self, pfns: Sequence[int]) -> None:
        """Set the idle bit of ``pfns`` (which clears their young bits in the page tables)."""
        masks: dict[int, int] = {}
        for pfn in pfns:
            if pfn >= 0:
                masks[pfn >> 6] = masks.get(pfn >> 6, 0) | (1 << (pfn & 63))
        fd = self.bitmap_fd
        for word, mask in masks.items():
            try:
                os.pwrite(fd, mask.to_bytes(8, "little"), word << 3)
            except OSError:
                continue  # e.g. a PFN past the end of memory: nothing to mark

    def idle(self, pfns: Sequence[int]) -> list[bool]:
        """Whether each PFN's page is still idle (not accessed since :meth:`mark_idle`).

        Negative PFNs read as idle (not accessed).
        """
        words: dict[int, int] = {}
        fd = self.bitmap_fd
        out = []
        for pfn in pfns:
            if pfn < 0:
                out.append(True)
                continue
            word = words.get(pfn >> 6)
            if word is None:
                word = words[pfn >> 6] = _read_u64(fd, pfn >> 6)
            out.append(bool(word >> (pfn & 63) & 1))
        return out

    def close(self) -> None:
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        for fd in (self.kpageflags_fd, self.bitmap_fd):
            try:
                os.close(fd)
            except OSError:
                pass
