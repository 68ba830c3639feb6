"""A reverse map from page frames to the processes that map them (for paddr actions).

The kernel's paddr ``pageout`` reclaims the folios of a physical range directly. User space can
only page out memory through ``process_madvise(MADV_PAGEOUT)``, which takes a process and a
virtual address; Linux has no interface from a page frame to those, so :func:`build_reverse_map`
builds one: it reads every process's ``/proc/PID/maps`` and ``/proc/PID/pagemap`` and keeps, for
each present page, ``(pfn, pid, vaddr)`` in numpy arrays sorted by PFN. A physical range then
resolves by binary search (:meth:`ReverseMap.lookup`).

What is left out, and why:

- kernel threads (no mappings) and processes that exit mid-scan;
- the calling process (pydamon itself): paging out the monitor's own memory would only make it
  fault the memory back in on its next sample (the kernel's kdamond has no user memory at all);
- ``PROT_NONE`` mappings (no page of them can be present) and the ``[vdso]``/``[vvar]`` pages
  (special mappings madvise refuses);
- page frames no process maps (unmapped page cache, free, kernel memory): user space cannot
  reach them at all.

The build costs one ``pagemap`` read per 64 Ki pages of every mapping (8 bytes per page of
virtual memory mapped, present or not) and memory of 25 bytes per present page; see
``bench/rmap_build.py`` for measured times. It is never run per sample: the paddr operations set
rebuilds it at most once per ops-update interval, at the first action applied after it went
stale.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

import numpy as np

from pydamon.core.errors import FeatureMissing
from pydamon.core.regions import PAGE_SHIFT, PAGE_SIZE
from pydamon.ops import _proc, pagefacts

IntArray = pagefacts.IntArray
BoolArray = pagefacts.BoolArray
#: pagemap entries read per pread (512 KiB): bounds the temporary memory of a huge mapping
CHUNK_PAGES = 1 << 16
#: pages at most this far apart are read with the pagemap between them: a pagemap entry of a
#: present page costs ~0.1-0.4 us to read, a pread of its own ~5 us of Python and syscall
GAP_PAGES = 32
#: special mappings whose pages madvise refuses (VM_PFNMAP / VM_IO) or that are the kernel's
SKIPPED_MAPPINGS = ("[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]")


@dataclass
class ReverseMap:
    """``(pfn, pid, vaddr)`` of every present page mapped by a process, sorted by PFN."""

    pfns: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    pids: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    vaddrs: IntArray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: True where the PFN has more than one entry (shared between or within processes)
    shared: BoolArray = field(default_factory=lambda: np.zeros(0, np.bool_))
    #: processes whose pages are in the map
    nr_processes: int = 0
    #: processes skipped: exited while being scanned, or not readable (e.g. another namespace)
    nr_skipped: int = 0
    #: wall-clock time the build took
    build_seconds: float = 0.0

    def __len__(self) -> int:
        return int(self.pfns.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.pfns.nbytes + self.pids.nbytes + self.vaddrs.nbytes + self.shared.nbytes)

    def lookup(self, start: int, end: int) -> slice:
        """The entries whose page frame lies in the physical range ``[start, end)``."""
        lo = start >> PAGE_SHIFT
        hi = (end + PAGE_SIZE - 1) >> PAGE_SHIFT
        first, last = np.searchsorted(self.pfns, (lo, hi), side="left")
        return slice(int(first), int(last))


def user_pids(exclude: Collection[int] = ()) -> list[int]:
    """Pids of all processes in ``/proc`` but ``exclude``."""
    return sorted(
        int(name) for name in os.listdir("/proc") if name.isdigit() and int(name) not in exclude
    )


def process_pages(pid: int) -> tuple[IntArray, IntArray]:
    """``(vaddrs, pfns)`` of the present pages of process ``pid``, in address order.

    Raises ``ProcessLookupError`` if the process is gone (or exits while read) and
    ``PermissionError`` if its pagemap cannot be read. PFNs read as 0 when the kernel hides
    them (readers without CAP_SYS_ADMIN).
    """
    maps = _proc.read_maps(pid)
    if not maps:  # a kernel thread (no mm: its pagemap cannot even be opened) or a zombie
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    try:
        fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
    except FileNotFoundError:
        raise ProcessLookupError(errno.ESRCH, f"process {pid} exited") from None
    vaddr_parts: list[IntArray] = []
    pfn_parts: list[IntArray] = []
    present_bit = np.uint64(pagefacts.PM_PRESENT)
    pfn_mask = np.uint64(pagefacts.PM_PFN_MASK)
    try:
        for m in maps:
            if m.perms.startswith("---") or m.path in SKIPPED_MAPPINGS:
                continue
            first = m.start >> PAGE_SHIFT
            last = m.end >> PAGE_SHIFT
            for chunk in range(first, last, CHUNK_PAGES):
                count = min(CHUNK_PAGES, last - chunk)
                try:
                    data = os.pread(fd, 8 * count, 8 * chunk)
                except OSError as err:
                    if err.errno == errno.ESRCH:
                        raise ProcessLookupError(errno.ESRCH, f"process {pid} exited") from None
                    break  # e.g. a mapping torn down since maps was read: skip its rest
                if not data:
                    break
                entries = np.frombuffer(data, np.uint64)
                present = np.flatnonzero(entries & present_bit)
                if not present.shape[0]:
                    continue
                pfn_parts.append((entries[present] & pfn_mask).astype(np.int64))
                vaddr_parts.append((present + chunk) << PAGE_SHIFT)
    finally:
        os.close(fd)
    if not pfn_parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(vaddr_parts).astype(np.int64), np.concatenate(pfn_parts)


def build_reverse_map(
    pids: Iterable[int] | None = None, *, exclude: Collection[int] | None = None
) -> ReverseMap:
    """Scan processes (default: all but this one) into a :class:`ReverseMap`.

    Raises :class:`FeatureMissing` (one line) if pages are present but every PFN reads as 0.
    """
    began = time.perf_counter()
    if exclude is None:
        exclude = (os.getpid(),)
    todo = user_pids(exclude) if pids is None else [p for p in pids if p not in exclude]
    pfn_parts: list[IntArray] = []
    pid_parts: list[IntArray] = []
    vaddr_parts: list[IntArray] = []
    nr_processes = nr_skipped = nr_denied = 0
    for pid in todo:
        try:
            vaddrs, pfns = process_pages(pid)
        except ProcessLookupError:
            nr_skipped += 1  # exited mid-scan
            continue
        except PermissionError:
            nr_skipped += 1  # e.g. a process of another user, or another pid namespace
            nr_denied += 1
            continue
        if not pfns.shape[0]:
            continue  # kernel thread, or nothing present
        nr_processes += 1
        pfn_parts.append(pfns)
        vaddr_parts.append(vaddrs)
        pid_parts.append(np.full(pfns.shape[0], pid, np.int64))
    if not pfn_parts:
        if nr_denied:
            raise FeatureMissing(
                f"cannot read the pagemap of any process ({nr_denied} denied); run as root to "
                "act on physical memory"
            )
        return ReverseMap(nr_skipped=nr_skipped, build_seconds=time.perf_counter() - began)
    pfns = np.concatenate(pfn_parts)
    if not pfns.any():
        raise FeatureMissing(
            "/proc/PID/pagemap shows no page frame numbers (hidden from readers without "
            "CAP_SYS_ADMIN); run as root to act on physical memory"
        )
    pids_arr = np.concatenate(pid_parts)
    vaddrs = np.concatenate(vaddr_parts)
    order = np.lexsort((vaddrs, pids_arr, pfns))
    pfns, pids_arr, vaddrs = pfns[order], pids_arr[order], vaddrs[order]
    same_as_next = pfns[1:] == pfns[:-1]
    shared = np.zeros(pfns.shape[0], np.bool_)
    shared[1:] |= same_as_next
    shared[:-1] |= same_as_next
    return ReverseMap(
        pfns,
        pids_arr,
        vaddrs,
        shared,
        nr_processes=nr_processes,
        nr_skipped=nr_skipped,
        build_seconds=time.perf_counter() - began,
    )


def group_by_pid(
    pids: IntArray, vaddrs: IntArray, pfns: IntArray
) -> list[tuple[int, IntArray, IntArray]]:
    """Page entries grouped by process: ``(pid, vaddrs, pfns)`` with vaddrs ascending.

    The entries of a physical range come in frame order; a process's pages are advised by
    address, so they are put back in address order.
    """
    if not pids.shape[0]:
        return []
    order = np.lexsort((vaddrs, pids))
    p, v, f = pids[order], vaddrs[order], pfns[order]
    bounds = np.concatenate(([0], np.flatnonzero(np.diff(p)) + 1, [p.shape[0]])).tolist()
    return [(int(p[a]), v[a:b], f[a:b]) for a, b in zip(bounds, bounds[1:])]


def merge_ranges(vaddrs: IntArray) -> list[tuple[int, int]]:
    """Ascending page addresses merged into ``[start, end)`` ranges of consecutive pages."""
    shift = PAGE_SHIFT
    return [
        (first << shift, (first + count) << shift)
        for first, count, _ in pagefacts.runs(vaddrs >> shift)
    ]


def read_pagemap_pages(pagemap_fd: int, vaddrs: IntArray) -> pagefacts.U64Array:
    """The pagemap entries of ascending page addresses ``vaddrs``.

    Pages less than :data:`GAP_PAGES` apart are read as one span (a pread per 64 Ki entries):
    skipping a short gap costs less than another pread, and the pages of a physical range are
    often scattered over a process's address space. Entries that cannot be read are 0.
    """
    n = vaddrs.shape[0]
    out = np.zeros(n, np.uint64)
    if not n:
        return out
    idx = vaddrs >> PAGE_SHIFT
    breaks = np.flatnonzero(np.diff(idx) > GAP_PAGES) + 1
    bounds = np.concatenate(([0], breaks, [n])).tolist()
    firsts = idx[bounds[:-1]].tolist()
    lasts = idx[np.asarray(bounds[1:]) - 1].tolist()
    for a, b, first, last in zip(bounds, bounds[1:], firsts, lasts):
        span = last - first + 1
        parts = []
        for pos in range(0, span, CHUNK_PAGES):
            count = min(CHUNK_PAGES, span - pos)
            try:
                data = os.pread(pagemap_fd, 8 * count, 8 * (first + pos))
            except OSError:
                return out  # the process is gone: nothing more is mapped
            parts.append(data)
            if len(data) < 8 * count:
                break
        data = b"".join(parts) if len(parts) > 1 else parts[0]
        if b - a == 1:  # a lone page (scattered pages): skip numpy's per-call overhead
            out[a] = int.from_bytes(data[:8], "little") if len(data) >= 8 else 0
            continue
        entries = np.frombuffer(data, np.uint64, len(data) // 8)
        rel = idx[a:b] - first
        ok = rel < entries.shape[0]
        out[a:b][ok] = entries[rel[ok]]
    return out


def verified_ranges(
    pagemap_fd: int, vaddrs: IntArray, expected_pfns: IntArray
) -> list[tuple[int, int]]:
    """Ranges of the ascending pages ``vaddrs`` of one process that still map the frames the
    reverse map recorded (``expected_pfns``).

    Pages move (swapped out and in, migrated, compacted, unmapped) between the build and the use
    of the map: their pagemap entries, read again, find those that did.
    """
    pfns, present, _ = pagefacts.decode_pagemap(read_pagemap_pages(pagemap_fd, vaddrs))
    return merge_ranges(vaddrs[present & (pfns == expected_pfns)])
