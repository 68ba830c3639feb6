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
virtual memory mapped, present or not) and memory of 24 bytes per present page; see
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

from pydamon.features import FeatureMissing
from pydamon.ops import _proc

IntArray = _proc.IntArray
BoolArray = _proc.BoolArray

PAGE_SIZE = 1 << _proc.PAGE_SHIFT
#: pagemap entries read per pread (512 KiB): bounds the temporary memory of a huge mapping
CHUNK_PAGES = 1 << 16
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
        lo = start >> _proc.PAGE_SHIFT
        hi = (end + PAGE_SIZE - 1) >> _proc.PAGE_SHIFT
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
    present_bit = np.uint64(_proc.PM_PRESENT)
    pfn_mask = np.uint64(_proc.PM_PFN_MASK)
    try:
        for m in maps:
            if m.perms.startswith("---") or m.path in SKIPPED_MAPPINGS:
                continue
            first = m.start >> _proc.PAGE_SHIFT
            last = m.end >> _proc.PAGE_SHIFT
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
                vaddr_parts.append((present + chunk) << _proc.PAGE_SHIFT)
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


@dataclass(frozen=True)
class Run:
    """Consecutive pages of one process: ``[start, end)`` mapping ``pfns[first:first + n]``."""

    pid: int
    start: int
    end: int
    #: index of the run's first page in the sorted arrays :func:`coalesce` returns
    first: int

    @property
    def nr_pages(self) -> int:
        return (self.end - self.start) >> _proc.PAGE_SHIFT


def coalesce(pids: IntArray, vaddrs: IntArray, pfns: IntArray) -> tuple[list[Run], IntArray]:
    """Group page entries by process and merge pages at consecutive addresses into runs.

    Returns the runs (sorted by pid, then address) and the entries' PFNs in run order (a run's
    pages are ``pfns[run.first : run.first + run.nr_pages]``).
    """
    if not pids.shape[0]:
        return [], np.zeros(0, np.int64)
    order = np.lexsort((vaddrs, pids))
    p, v = pids[order], vaddrs[order]
    breaks = np.flatnonzero((np.diff(p) != 0) | (np.diff(v) != PAGE_SIZE)) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [p.shape[0]]))
    runs = [
        Run(pid, start, last + PAGE_SIZE, first)
        for pid, start, last, first in zip(
            p[starts].tolist(), v[starts].tolist(), v[ends - 1].tolist(), starts.tolist()
        )
    ]
    return runs, pfns[order]


def still_mapped(pagemap_fd: int, run: Run, expected_pfns: IntArray) -> list[tuple[int, int]]:
    """The parts of ``run`` whose pages still map the PFNs the reverse map recorded.

    Pages move (swapped out and in, migrated, compacted, unmapped) between the build and the use
    of the map: one pagemap read per run finds those that did.
    """
    entries = _proc.read_entries(
        pagemap_fd, np.arange(run.start >> _proc.PAGE_SHIFT, run.end >> _proc.PAGE_SHIFT)
    )
    pfns, present, _ = _proc.decode_pagemap(entries)
    same = present & (pfns == expected_pfns)
    if same.all():
        return [(run.start, run.end)]
    edges = np.flatnonzero(np.diff(np.concatenate(([0], same.astype(np.int8), [0]))))
    return [
        (run.start + int(lo) * PAGE_SIZE, run.start + int(hi) * PAGE_SIZE)
        for lo, hi in zip(edges[::2], edges[1::2])
    ]
