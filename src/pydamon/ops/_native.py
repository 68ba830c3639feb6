"""The per-sample access-check loop: a C helper built at install time, else pure Python.

``_fastpath.c`` is compiled by ``pip install`` into the extension module
``pydamon.ops._fastpath`` (setup.py; optional, so an install without a compiler still succeeds)
and loaded with ctypes from the installed package only: the file that the import system finds
for that module name in this package, never a cache or a path from the environment. Nothing is
compiled at run time. When running as root, a helper file that is group- or world-writable or
not owned by root is refused (someone else could put code in it that would run as root).

Two paths, picked once per process (:func:`status`), giving the same results (the host tests
compare them, system calls included): ``c``, the helper, and ``python``. Both read and write
8-byte entries sorted, one ``pread``/``pwrite`` per run of adjacent entries (so the sampling
addresses whose frames share a 64-frame idle-bitmap word share its read and its write), and
read kpageflags at prepare time only where huge pages may be (:mod:`pydamon.ops.hugemaps`).
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import importlib.util
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

from pydamon.core.regions import Regions
from pydamon.ops import pagefacts

#: The extension module that setup.py builds from ``_fastpath.c``.
HELPER_MODULE = "pydamon.ops._fastpath"

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: A PFN with this bit was not looked up in kpageflags at prepare time (its address lies where
#: no huge page was seen): a frame page_idle cannot track (off the LRU, a THP tail) reads "not
#: idle" like an accessed one, so its flags are read at check time when its bit reads so.
PFN_UNVERIFIED = 1 << 62
#: A PFN set to this by a check that found the unverified frame a THP tail (a huge page where
#: none was known: the caller adds its mapping to the huge ranges).
PFN_TAIL_SEEN = -3
#: the counters of the access checks (``stats`` arrays; ``STAT_*`` of ``_fastpath.c``)
STAT_SYSCALLS, STAT_TAILS_SEEN, STAT_REGION_SAMPLES = 0, 1, 2
NR_STATS = 3


@dataclass(frozen=True)
class AccessCheckPath:
    """Which access-check path this process uses, and why."""

    #: ``c`` (the compiled helper) or ``python``
    name: str
    #: the helper's file, found in the installed package ("" if there is none)
    helper_file: str
    #: why this path: where the helper was loaded from, or why it was not
    why: str
    #: what would give the C path ("" when it runs or nothing can be done)
    fix: str = ""


def _helper_file() -> str | None:
    """The helper's file in this package (found as the import system would), or None."""
    try:
        spec = importlib.util.find_spec(HELPER_MODULE)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    if not isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
        return None
    return spec.origin


def _refusal(st: os.stat_result) -> str:
    """Why a helper file with these stats must not be loaded by this process ("" if none).

    Only root is at risk: anyone who can write the file could run code as root through it.
    """
    if os.geteuid() != 0:
        return ""
    if st.st_uid not in (0, os.geteuid()):
        return f"owned by uid {st.st_uid}, not root, while running as root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"group/world-writable (mode {stat.S_IMODE(st.st_mode):04o}) while running as root"
    return ""


def _bind(lib: ctypes.CDLL) -> None:
    # Plain addresses (c_void_p) rather than typed pointers: building ctypes pointer objects
    # costs more than the call itself under emulation.
    ptr = ctypes.c_void_p
    c_int, c_int64 = ctypes.c_int, ctypes.c_int64
    lib.pydamon_prepare.argtypes = (c_int, c_int, c_int, ptr, c_int64, ptr, c_int64, ptr, ptr)
    lib.pydamon_prepare.restype = c_int64
    lib.pydamon_check.argtypes = (c_int, c_int, ptr, c_int64, ptr, ptr)
    lib.pydamon_check.restype = c_int
    lib.pydamon_pick_prepare.argtypes = (
        c_int,
        c_int,
        c_int,
        ptr,
        ptr,
        c_int64,
        ptr,
        ptr,
        c_int64,
        ptr,
        ptr,
        ptr,
    )
    lib.pydamon_pick_prepare.restype = c_int64
    lib.pydamon_update_rate.argtypes = (c_int64, ptr, ptr, ptr, ptr, c_int64)
    lib.pydamon_update_rate.restype = c_int64
    lib.pydamon_check_update.argtypes = (
        c_int,
        c_int,
        ptr,
        c_int64,
        ptr,
        ptr,
        ptr,
        ptr,
        c_int64,
        ptr,
        ptr,
    )
    lib.pydamon_check_update.restype = c_int


@cache
def _load() -> tuple[ctypes.CDLL | None, AccessCheckPath]:
    found = _helper_file()
    if found is None:
        return None, AccessCheckPath(
            "python",
            "",
            "no compiled helper in the installed package (pip install found no working C "
            "compiler, or the compile failed)",
            "install a C compiler and reinstall pydamon (pip install -v shows the build)",
        )
    try:
        fd = os.open(found, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        return None, AccessCheckPath("python", found, f"cannot open {found}: {err.strerror}")
    try:
        # Checked and loaded through the same open file: a file swapped in between the check
        # and the load is never the one loaded.
        why = _refusal(os.fstat(fd))
        if why:
            return None, AccessCheckPath(
                "python",
                found,
                f"refused {found}: {why}",
                "chown root and chmod go-w the file (or reinstall pydamon as root)",
            )
        try:
            lib = ctypes.CDLL(f"/proc/self/fd/{fd}")
            _bind(lib)
        except (OSError, AttributeError) as err:
            return None, AccessCheckPath(
                "python", found, f"{found} did not load: {err}", "reinstall pydamon"
            )
    finally:
        os.close(fd)
    return lib, AccessCheckPath("c", found, f"compiled helper loaded from {found}")


def load() -> ctypes.CDLL | None:
    """The installed compiled helper, or None (not built, refused or broken: :func:`status`)."""
    return _load()[0]


def status() -> AccessCheckPath:
    """Which access-check path this process uses, and why (loads the helper on first call)."""
    return _load()[1]


def path() -> str:
    """The path this process uses: ``c`` (the compiled helper) or ``python``."""
    return status().name


def new_stats() -> IntArray:
    """Counters of the access checks (:data:`STAT_SYSCALLS`...), as the C helper keeps them."""
    return np.zeros(NR_STATS, np.int64)


def _huge_args(huge: IntArray | None) -> tuple[int, int]:
    """The C helper's ``huge, nr_huge``: None (huge pages may be anywhere) is ``nr_huge`` -1."""
    if huge is None:
        return 0, -1
    return huge.ctypes.data, len(huge) // 2


def prepare(
    phys: pagefacts.PhysPages,
    pagemap: pagefacts.Pagemap | None,
    addrs: IntArray,
    native: bool = True,
    huge: IntArray | None = None,
    stats: IntArray | None = None,
) -> IntArray:
    """Translate sampling addresses to trackable PFNs (-1: not checkable) and mark them idle.

    ``pagemap`` None means ``addrs`` are physical addresses (paddr). ``huge``: the flat, sorted
    ``[start, end, ...]`` ranges where huge pages may be (None: anywhere); outside them the
    PFNs carry :data:`PFN_UNVERIFIED` (their kpageflags are read at check time, if needed).
    ``stats``: counters to add to (:func:`new_stats`).
    """
    stats = new_stats() if stats is None else stats
    lib = load() if native else None
    addrs = np.ascontiguousarray(addrs, dtype=np.int64)
    if huge is not None:
        huge = np.ascontiguousarray(huge, dtype=np.int64)
    if lib is not None:
        pfns = np.empty(len(addrs), np.int64)
        ret = lib.pydamon_prepare(
            pagemap.fd if pagemap is not None else -1,
            phys.kpageflags_fd,
            phys.bitmap_fd,
            addrs.ctypes.data,
            len(addrs),
            *_huge_args(huge),
            pfns.ctypes.data,
            stats.ctypes.data,
        )
        if ret == -1:
            raise MemoryError("pydamon_prepare: out of memory")
        return pfns
    return np.array(_prepare_py(phys, pagemap, addrs.tolist(), huge, stats), np.int64)


def _may_be_huge(huge: IntArray | None, addrs: list[int]) -> list[bool]:
    if huge is None:
        return [True] * len(addrs)
    at = np.searchsorted(huge, np.array(addrs, np.int64), side="right")
    return [bool(i & 1) for i in at.tolist()]  # odd: after a start, before its end


def _prepare_py(
    phys: pagefacts.PhysPages,
    pagemap: pagefacts.Pagemap | None,
    addrs: list[int],
    huge: IntArray | None,
    stats: IntArray,
) -> list[int]:
    """:func:`prepare` in Python: the steps of ``pydamon_prepare()``, with its system calls."""
    if pagemap is not None:
        entries = pagefacts.batch_read(pagemap.fd, [a >> 12 for a in addrs], 8, stats)
        pfns = [e & pagefacts.PM_PFN_MASK if e & pagefacts.PM_PRESENT else -1 for e in entries]
    else:
        pfns = [a >> 12 for a in addrs]
    inside = _may_be_huge(huge, addrs)
    look = [i for i, p in enumerate(pfns) if p > 0 and inside[i]]
    for i, p in enumerate(pfns):
        if p <= 0:
            pfns[i] = -1
        elif not inside[i]:
            pfns[i] = p | PFN_UNVERIFIED
    flags = pagefacts.batch_read(phys.kpageflags_fd, [pfns[i] for i in look], 0, stats)
    tails = []
    for i, f in zip(look, flags):
        if f >> pagefacts.KPF_COMPOUND_TAIL & 1:
            tails.append(i)
        elif not f >> pagefacts.KPF_LRU & 1:
            pfns[i] = -1
    if tails:
        # a tail's head: the first aligned candidate that is a head page (all in one batch)
        order = pagefacts.MAX_FOLIO_ORDER
        cand = [pfns[i] & ~((2 << j) - 1) for i in tails for j in range(order)]
        cflags = pagefacts.batch_read(phys.kpageflags_fd, cand, 64, stats)
        for k, i in enumerate(tails):
            pfns[i] = -1
            for j in range(order):
                f = cflags[k * order + j]
                if f >> pagefacts.KPF_COMPOUND_HEAD & 1:
                    pfns[i] = cand[k * order + j] if f >> pagefacts.KPF_LRU & 1 else -1
                    break
    masks: dict[int, int] = {}
    for p in pfns:
        if p >= 0:
            word = (p & pagefacts.PM_PFN_MASK) >> 6
            masks[word] = masks.get(word, 0) | 1 << (p & 63)
    words = sorted(masks)
    pagefacts.batch_write(phys.bitmap_fd, words, [masks[w] for w in words], stats)
    return pfns


def check(
    phys: pagefacts.PhysPages,
    pfns: IntArray,
    native: bool = True,
    stats: IntArray | None = None,
) -> BoolArray:
    """Whether each PFN's page was accessed since :func:`prepare` (-1: not accessed).

    A :data:`PFN_UNVERIFIED` frame whose bit reads "accessed" counts only if kpageflags say
    page_idle tracks it; one that is a THP tail is set to :data:`PFN_TAIL_SEEN` in ``pfns``.
    """
    stats = new_stats() if stats is None else stats
    lib = load() if native else None
    if lib is not None:
        accessed = np.empty(len(pfns), np.uint8)
        ret = lib.pydamon_check(
            phys.bitmap_fd,
            phys.kpageflags_fd,
            pfns.ctypes.data,
            len(pfns),
            accessed.ctypes.data,
            stats.ctypes.data,
        )
        if ret == -1:
            raise MemoryError("pydamon_check: out of memory")
        return accessed.view(np.bool_)
    out = _check_py(phys, pfns.tolist(), stats)
    pfns[:] = out[1]
    return np.array(out[0], np.bool_)


def _check_py(
    phys: pagefacts.PhysPages, pfns: list[int], stats: IntArray
) -> tuple[list[bool], list[int]]:
    """:func:`check` in Python: the steps of ``pydamon_check()``; (accessed, pfns after)."""
    mask = pagefacts.PM_PFN_MASK
    words = sorted({(p & mask) >> 6 for p in pfns if p >= 0})
    values = dict(zip(words, pagefacts.batch_read(phys.bitmap_fd, words, 0, stats)))
    accessed = [p >= 0 and not values[(p & mask) >> 6] >> (p & 63) & 1 for p in pfns]
    verify = [i for i, p in enumerate(pfns) if accessed[i] and p & PFN_UNVERIFIED]
    flags = pagefacts.batch_read(phys.kpageflags_fd, [pfns[i] & mask for i in verify], 0, stats)
    for i, f in zip(verify, flags):
        if f >> pagefacts.KPF_COMPOUND_TAIL & 1:
            accessed[i] = False
            pfns[i] = PFN_TAIL_SEEN
            stats[STAT_TAILS_SEEN] += 1
        elif not f >> pagefacts.KPF_LRU & 1:
            accessed[i] = False
    return accessed, pfns


# -- one sample of a target, whole -------------------------------------------------------------


class Sampler:
    """One target's per-sample work in two C calls: ``pick_prepare`` (sampling addresses, PFNs,
    idle bits) and ``check_update`` (idle bits read back, the regions' ``nr_accesses`` and
    ``nr_accesses_bp`` updated in place), as the kernel's vaddr does in
    ``damon_va_prepare_access_checks()`` / ``damon_va_check_accesses()``.

    Without the C helper (or ``native=False``) the same steps run through the core's numpy
    methods (:meth:`Regions.pick_sampling_addrs`, :meth:`Regions.update_access_rate`). The C
    draw of sampling addresses uses its own generator, seeded from the context's, so both are
    reproducible from the context's seed but pick different addresses.

    ``huge`` (flat sorted ranges, None: anywhere) says where kpageflags are read at prepare
    time; ``on_tails_seen`` is called with the sampling addresses where a check met a huge page
    outside them (it may widen ``huge``). ``stats`` counts system calls and region-samples.
    """

    def __init__(self, rng: np.random.Generator, native: bool = True) -> None:
        self.lib = load() if native else None
        self._huge: IntArray | None = None
        self._huge_args = _huge_args(None)
        self.on_tails_seen: Callable[[IntArray], None] | None = None
        #: counters: system calls, tails seen, region-samples (``STAT_*``)
        self.stats = new_stats()
        self._stats_ptr = self.stats.ctypes.data
        self.rng = rng
        self._rng_state = np.array([rng.integers(0, 2**63, dtype=np.int64)], np.uint64)
        self._rng_state_ptr = self._rng_state.ctypes.data
        self._max_nr = np.zeros(1, np.int64)
        self._max_nr_ptr = self._max_nr.ctypes.data
        #: PFN checked for each region this sample (-1: nothing to check: not accessed)
        self.pfns: IntArray = np.zeros(0, np.int64)
        self._accessed = np.zeros(0, np.uint8)
        # The regions' arrays and their addresses: fetching an array's address costs a few
        # microseconds (tens under emulation), and the arrays change only when regions do.
        self._arrays: tuple[IntArray, ...] = ()
        self._ptrs: tuple[int, ...] = ()

    @property
    def huge(self) -> IntArray | None:
        """Where huge pages may be (flat sorted ``[start, end, ...]``; None: anywhere)."""
        return self._huge

    @huge.setter
    def huge(self, ranges: IntArray | None) -> None:
        if ranges is not None:
            ranges = np.ascontiguousarray(ranges, dtype=np.int64)
        self._huge = ranges
        self._huge_args = _huge_args(ranges)  # its address, fetched once (see _pointers)

    def _pointers(self, regions: Regions) -> tuple[int, ...]:
        arrays = (
            regions.start,
            regions.end,
            regions.sampling_addr,
            regions.nr_accesses,
            regions.nr_accesses_bp,
            regions.last_nr_accesses,
        )
        cached = self._arrays
        if len(cached) != len(arrays) or any(a is not b for a, b in zip(arrays, cached)):
            self._arrays = arrays
            self._ptrs = tuple(a.ctypes.data for a in arrays)
        return self._ptrs

    def pick_prepare(
        self, phys: pagefacts.PhysPages, pagemap: pagefacts.Pagemap | None, regions: Regions
    ) -> None:
        """Pick a sampling address in every region, translate it, and mark its page idle."""
        n = len(regions)
        if len(self.pfns) != n:
            self.pfns = np.empty(n, np.int64)
            self._accessed = np.empty(n, np.uint8)
        lib = self.lib
        if lib is None:
            addrs = regions.pick_sampling_addrs(self.rng)
            self.pfns = prepare(phys, pagemap, addrs, False, self.huge, self.stats)
            self.stats[STAT_REGION_SAMPLES] += n
            return
        start, end, sampling_addr = self._pointers(regions)[:3]
        ret = lib.pydamon_pick_prepare(
            pagemap.fd if pagemap is not None else -1,
            phys.kpageflags_fd,
            phys.bitmap_fd,
            start,
            end,
            n,
            self._rng_state_ptr,
            *self._huge_args,
            sampling_addr,
            self.pfns.ctypes.data,
            self._stats_ptr,
        )
        if ret == -1:
            raise MemoryError("pydamon_pick_prepare: out of memory")

    def skip(self, regions: Regions) -> None:
        """Nothing to check this sample (the target is gone): every region reads not accessed."""
        self.pfns = np.full(len(regions), -1, np.int64)

    def check_update(
        self, phys: pagefacts.PhysPages, regions: Regions, max_nr_accesses: int
    ) -> int:
        """Read back the idle bits and count the accesses; the highest nr_accesses."""
        n = len(regions)
        tails_before = int(self.stats[STAT_TAILS_SEEN])
        if len(self.pfns) != n:  # regions changed since prepare (never between the two)
            accessed = np.zeros(n, np.bool_)
        elif self.lib is None:
            accessed = check(phys, self.pfns, False, self.stats)
        else:
            ptrs = self._pointers(regions)
            ret = self.lib.pydamon_check_update(
                phys.bitmap_fd,
                phys.kpageflags_fd,
                self.pfns.ctypes.data,
                n,
                self._accessed.ctypes.data,
                ptrs[3],
                ptrs[4],
                ptrs[5],
                max_nr_accesses,
                self._max_nr_ptr,
                self._stats_ptr,
            )
            if ret == -1:
                raise MemoryError("pydamon_check_update: out of memory")
            self._tails_seen(regions, tails_before)
            return int(self._max_nr[0])
        regions.update_access_rate(accessed, max_nr_accesses)
        self._tails_seen(regions, tails_before)
        return int(regions.nr_accesses.max()) if n else 0

    def _tails_seen(self, regions: Regions, before: int) -> None:
        if self.stats[STAT_TAILS_SEEN] != before and self.on_tails_seen is not None:
            self.on_tails_seen(regions.sampling_addr[self.pfns == PFN_TAIL_SEEN])

    def syscalls_per_region_sample(self) -> float | None:
        """System calls per region-sample so far (None before the first sample)."""
        nr = int(self.stats[STAT_REGION_SAMPLES])
        return float(self.stats[STAT_SYSCALLS]) / nr if nr else None


def update_rate(
    regions: Regions, accessed: BoolArray, max_nr_accesses: int, native: bool = True
) -> int:
    """:meth:`Regions.update_access_rate` through the C helper (for tests comparing the two)."""
    lib = load() if native else None
    if lib is None:
        regions.update_access_rate(accessed, max_nr_accesses)
        return int(regions.nr_accesses.max()) if len(regions) else 0
    flags = np.ascontiguousarray(accessed, dtype=np.uint8)
    return int(
        lib.pydamon_update_rate(
            len(regions),
            flags.ctypes.data,
            regions.nr_accesses.ctypes.data,
            regions.nr_accesses_bp.ctypes.data,
            regions.last_nr_accesses.ctypes.data,
            max_nr_accesses,
        )
    )
