"""Page facts: the one home of the kernel's per-page interfaces (like ``mm/damon/ops-common.c``).

Everything the operations sets and their DAMOS ops filters learn about pages is read here:

- ``/proc/PID/pagemap``: a process's page -> present, swapped, file-backed, page frame number;
- ``/proc/kpageflags``: a frame's flags (LRU, active, anon, mapped, compound head/tail, THP);
- ``/proc/kpagecgroup``: the inode of a frame's memory cgroup;
- ``/sys/kernel/mm/page_idle/bitmap``: a frame's idle bit (set: "not accessed since marked").

A folio is tracked through its head frame: page_idle can neither set nor read a tail frame's bit
(a tail always reads "not idle", i.e. young), and on kernels before 6.10 a tail's LRU and active
flags are its head's. So every fact of a frame that belongs to its folio (young, LRU, active,
anon) is read from the folio's head (:func:`folio_heads`, :meth:`PhysPages.trackable`); facts of
the page itself (mapped, its own frame number) stay the frame's.

Reads are batched: one ``pread``/``pwrite`` per run of adjacent 8-byte entries (the idle bitmap
has one entry per 64 frames), never a walk over a monitored range. The per-sample access check
(:class:`PhysPages`) takes plain lists, the ops filters (:func:`page_facts_for_pfns`,
:func:`read_page_facts`) numpy arrays.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from pydamon.core.regions import PAGE_SHIFT, PAGE_SIZE
from pydamon.damos.filters import FilterUnsupported, PageFacts
from pydamon.damos.scheme import Filter, FilterType

IntArray = npt.NDArray[np.int64]
U64Array = npt.NDArray[np.uint64]
BoolArray = npt.NDArray[np.bool_]

#: A PMD-mapped transparent huge page (x86-64: 512 pages).
HPAGE_PMD_SIZE = 2 << 20
#: Largest folio whose head we look for (a PMD-mapped THP: order 9).
MAX_FOLIO_ORDER = 9

PAGE_IDLE_BITMAP = "/sys/kernel/mm/page_idle/bitmap"
KPAGEFLAGS = "/proc/kpageflags"
KPAGECGROUP = "/proc/kpagecgroup"

# pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst)
PM_PFN_MASK = (1 << 55) - 1
PM_EXCLUSIVE = 1 << 56
PM_FILE = 1 << 61
PM_SWAP = 1 << 62
PM_PRESENT = 1 << 63

# kpageflags bits (include/uapi/linux/kernel-page-flags.h)
KPF_LRU = 5
KPF_ACTIVE = 6
KPF_MMAP = 11
KPF_ANON = 12
KPF_COMPOUND_HEAD = 15
KPF_COMPOUND_TAIL = 16
KPF_HUGE = 17
KPF_NOPAGE = 20
KPF_THP = 22
KPF_IDLE = 25

#: The ops filters the page facts here can decide (an operations set's ``supported_ops_filters``).
OPS_FILTERS = frozenset({"anon", "active", "memcg", "young", "hugepage_size", "unmapped"})


# -- batched 8-byte entry files -------------------------------------------------------------------


def runs(indices: IntArray) -> list[tuple[int, int, int]]:
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
    for first, count, pos in runs(uniq):
        try:
            data = os.pread(fd, 8 * count, 8 * first)
        except OSError:
            continue
        n = len(data) // 8
        if n:
            values[pos : pos + n] = np.frombuffer(data[: 8 * n], np.uint64)
    return values[inverse]


#: entries read or written in one system call at most by the access check's batches
RUN_MAX = 512


def _run_ends(indices: list[int], max_gap: int) -> list[int]:
    """Cut sorted ``indices`` into runs at most ``max_gap + 1`` apart, each spanning fewer
    than :data:`RUN_MAX` entries: the end position of each run (the C helper's batches)."""
    ends = []
    first = 0
    for j in range(1, len(indices)):
        if indices[j] - indices[j - 1] > max_gap + 1 or indices[j] - indices[first] >= RUN_MAX:
            ends.append(j)
            first = j
    if indices:
        ends.append(len(indices))
    return ends


def batch_read(fd: int, indices: Sequence[int], max_gap: int, stats: IntArray) -> list[int]:
    """The 8-byte entries ``indices`` of ``fd`` (0 where unreadable), read in ascending order,
    one ``pread`` per run of entries at most ``max_gap + 1`` apart (the gaps are read and
    dropped); ``stats[0]`` counts the calls. The access check's reads, as ``batch_read()`` of
    ``_fastpath.c`` makes them."""
    order = sorted(range(len(indices)), key=indices.__getitem__)
    ordered = [indices[i] for i in order]
    out = [0] * len(indices)
    start = 0
    for end in _run_ends(ordered, max_gap):
        first = ordered[start]
        try:
            data = os.pread(fd, 8 * (ordered[end - 1] - first + 1), 8 * first)
        except OSError:
            data = b""
        stats[0] += 1
        for k in range(start, end):
            at = 8 * (ordered[k] - first)
            if at + 8 <= len(data):
                out[order[k]] = int.from_bytes(data[at : at + 8], "little")
        start = end
    return out


def batch_write(fd: int, words: Sequence[int], values: Sequence[int], stats: IntArray) -> None:
    """Write ``values`` to the entries ``words`` (sorted, distinct), one ``pwrite`` per run of
    adjacent entries (a failed write, past the end of memory: nothing to mark there)."""
    start = 0
    for end in _run_ends(list(words), 0):
        data = b"".join(v.to_bytes(8, "little") for v in values[start:end])
        try:
            os.pwrite(fd, data, 8 * words[start])
        except OSError:
            pass
        stats[0] += 1
        start = end


def _read_u64(fd: int, index: int) -> int:
    """One 8-byte entry (0 if it cannot be read)."""
    try:
        data = os.pread(fd, 8, index << 3)
    except OSError:
        return 0
    return int.from_bytes(data, "little") if len(data) == 8 else 0


def flag(flags: U64Array, bit: int) -> BoolArray:
    return (flags >> np.uint64(bit)) & np.uint64(1) != 0


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


def read_pagemap(pid: int | str, start: int, end: int) -> U64Array:
    """The pagemap entries of ``[start, end)`` of a process (one u64 per page; 0 past the end
    of the address space)."""
    nr_pages = (end - start) // PAGE_SIZE
    with open(f"/proc/{pid}/pagemap", "rb", buffering=0) as f:
        data = os.pread(f.fileno(), nr_pages * 8, (start // PAGE_SIZE) * 8)
    out = np.frombuffer(data, dtype=np.uint64)
    if out.shape[0] < nr_pages:
        out = np.concatenate([out, np.zeros(nr_pages - out.shape[0], np.uint64)])
    return out


def decode_pagemap(entries: U64Array) -> tuple[IntArray, BoolArray, BoolArray]:
    """``(pfns, present, swapped)`` of pagemap entries (pfn is -1 where not present)."""
    present = (entries & np.uint64(PM_PRESENT)) != 0
    swapped = (entries & np.uint64(PM_SWAP)) != 0
    pfns = (entries & np.uint64(PM_PFN_MASK)).astype(np.int64)
    pfns[~present] = -1
    return pfns, present, swapped


# -- folios: a tail frame's facts are its head's --------------------------------------------------


def folio_heads(
    kpageflags_fd: int, pfns: IntArray, flags: U64Array | None = None
) -> tuple[IntArray, U64Array]:
    """The head frame of each frame's folio (the frame itself unless it is a tail page), and
    the head's flags. ``flags`` are the frames' own kpageflags if already read.

    Folios are naturally aligned: a tail's head is the first of its aligned candidates (orders
    1..9) that is a head page. A tail whose head is not found (e.g. a bigger hugetlb page) stays
    as it is.
    """
    heads = np.asarray(pfns, np.int64).copy()
    head_flags = read_entries(kpageflags_fd, heads) if flags is None else flags.copy()
    todo = np.flatnonzero(flag(head_flags, KPF_COMPOUND_TAIL))
    for order in range(1, MAX_FOLIO_ORDER + 1):
        if not todo.shape[0]:
            break
        candidates = heads[todo] & ~((1 << order) - 1)
        candidate_flags = read_entries(kpageflags_fd, candidates)
        is_head = flag(candidate_flags, KPF_COMPOUND_HEAD)
        heads[todo[is_head]] = candidates[is_head]
        head_flags[todo[is_head]] = candidate_flags[is_head]
        todo = todo[~is_head]
    return heads, head_flags


def folio_sizes(flags: U64Array, pfns: IntArray) -> IntArray:
    """Folio size of each page from its own flags: THP pages are PMD-sized; other compound
    pages count their run (a head followed by tails at consecutive pfns)."""
    sizes = np.full(flags.shape[0], PAGE_SIZE, dtype=np.int64)
    head = flag(flags, KPF_COMPOUND_HEAD)
    tail = flag(flags, KPF_COMPOUND_TAIL)
    thp = flag(flags, KPF_THP)
    sizes[thp] = HPAGE_PMD_SIZE
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


# -- the idle bitmap -------------------------------------------------------------------------------


def mark_idle(bitmap_fd: int, pfns: IntArray) -> None:
    """Set the page_idle bits of ``pfns`` (an array; which clears their young bits in the page
    tables): one write per run of consecutive 64-frame words. A word that cannot be written
    (past the end of memory) is skipped: nothing to mark there."""
    if not pfns.shape[0]:
        return
    words, inverse = np.unique(pfns >> 6, return_inverse=True)
    masks = np.zeros(words.shape[0], np.uint64)
    np.bitwise_or.at(masks, inverse, np.uint64(1) << (pfns & 63).astype(np.uint64))
    for first, count, pos in runs(words):
        try:
            os.pwrite(bitmap_fd, masks[pos : pos + count].tobytes(), first << 3)
        except OSError:
            continue


def young_mkold(bitmap_fd: int, heads: IntArray) -> BoolArray:
    """Whether each folio (given by its head frame) was accessed since it was last marked idle;
    marks the young ones idle (``damon_folio_young()`` then ``damon_folio_mkold()``)."""
    words = read_entries(bitmap_fd, heads >> 6)
    young = (words >> (heads & 63).astype(np.uint64)) & np.uint64(1) == 0
    mark_idle(bitmap_fd, heads[young])
    return young


class PhysPages:
    """``/proc/kpageflags`` and the page_idle bitmap, kept open (the per-sample access check).

    The per-sample methods take and return plain lists: for the few hundred entries of one
    sample, a Python loop around ``pread`` is cheaper than numpy's per-call overhead (which is
    large under emulation).
    """

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
        """The head PFN and flags of the compound page (THP) ``pfn`` is a tail page of: the
        first aligned candidate that is a head, as :func:`folio_heads`. ``(-1, 0)`` if none is.
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
        for fd in (self.kpageflags_fd, self.bitmap_fd):
            try:
                os.close(fd)
            except OSError:
                pass


# -- the facts of the ops filters ------------------------------------------------------------------


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


def memcg_inos(filters: Iterable[Filter]) -> dict[str, int]:
    """The cgroup inode of every ``memcg`` filter's path (what the matching rules compare)."""
    return {
        f.memcg_path or "": memcg_ino(f.memcg_path or "")
        for f in filters
        if f.type == FilterType.MEMCG
    }


_FLAG_FACTS = {FilterType.ANON, FilterType.ACTIVE, FilterType.HUGEPAGE_SIZE, FilterType.UNMAPPED}


def _open(path: str, mode: int, what: str, why: str) -> int:
    try:
        return os.open(path, mode)
    except OSError as err:
        raise FilterUnsupported(f"{what} needs {path} ({err.strerror}); {why}") from None


def page_facts_for_pfns(
    pfns: IntArray,
    present: BoolArray,
    needed: set[FilterType],
    *,
    anon_hint: BoolArray | None = None,
) -> PageFacts:
    """Collect the facts ``needed`` filters use for physical pages ``pfns`` (only the
    ``present`` ones are read).

    A tail frame's folio facts (young, active, anon) are its head's. Reading ``young`` clears
    it (marks the young folios idle), as the kernel's young filter does. Raises
    :class:`FilterUnsupported` with what is missing (e.g. no root, no page_idle).
    """
    facts = PageFacts(present=present)
    pfns = np.asarray(pfns, dtype=np.int64)
    live = pfns[present]
    flag_facts = needed & _FLAG_FACTS
    if flag_facts or FilterType.YOUNG in needed:
        users = sorted(flag_facts | (needed & {FilterType.YOUNG}))
        what = f"the {', '.join(users)} filter{'s' if len(users) > 1 else ''}"
        kpageflags = _open(KPAGEFLAGS, os.O_RDONLY, what, "run as root")
        try:
            own = np.zeros(pfns.shape[0], np.uint64)
            own[present] = read_entries(kpageflags, live)
            live_heads, live_head_flags = folio_heads(kpageflags, live, own[present])
        finally:
            os.close(kpageflags)
        if flag_facts:
            head_flags = np.zeros(pfns.shape[0], np.uint64)
            head_flags[present] = live_head_flags
            facts.anon = flag(head_flags, KPF_ANON) if anon_hint is None else anon_hint
            facts.active = flag(head_flags, KPF_ACTIVE)
            facts.unmapped = ~flag(own, KPF_MMAP)
            facts.folio_size = folio_sizes(own, pfns)
        if FilterType.YOUNG in needed:
            bitmap = _open(
                PAGE_IDLE_BITMAP,
                os.O_RDWR,
                "the young filter",
                "needs root and CONFIG_IDLE_PAGE_TRACKING",
            )
            try:
                young = np.zeros(pfns.shape[0], bool)
                young[present] = young_mkold(bitmap, live_heads)
            finally:
                os.close(bitmap)
            facts.young = young
    if FilterType.MEMCG in needed:
        kpagecgroup = _open(
            KPAGECGROUP,
            os.O_RDONLY,
            "the memcg filter",
            "run as root on a kernel with CONFIG_MEMCG",
        )
        try:
            cg = np.zeros(pfns.shape[0], np.uint64)
            cg[present] = read_entries(kpagecgroup, live)
        finally:
            os.close(kpagecgroup)
        facts.memcg_ino = cg.astype(np.int64)
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
