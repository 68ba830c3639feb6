"""The per-sample access-check loop: a C helper built at install time, else pure Python.

``_fastpath.c`` is compiled by ``pip install`` into the extension module
``pydamon.ops._fastpath`` (setup.py; optional, so an install without a compiler still succeeds)
and loaded with ctypes from the installed package only: the file that the import system finds
for that module name in this package, never a cache or a path from the environment. Nothing is
compiled at run time. When running as root, a helper file that is group- or world-writable or
not owned by root is refused (someone else could put code in it that would run as root).

Two paths, picked once per process (:func:`status`), giving the same results (the host tests
compare them): ``c``, the helper with one ``pread``/``pwrite`` per entry, and ``python``.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import importlib.util
import os
import stat
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
    lib.pydamon_prepare.argtypes = (c_int, c_int, c_int, ptr, c_int64, ptr)
    lib.pydamon_prepare.restype = c_int64
    lib.pydamon_check.argtypes = (c_int, ptr, c_int64, ptr)
    lib.pydamon_check.restype = c_int
    lib.pydamon_pick_prepare.argtypes = (c_int, c_int, c_int, ptr, ptr, c_int64, ptr, ptr, ptr)
    lib.pydamon_pick_prepare.restype = c_int64
    lib.pydamon_update_rate.argtypes = (c_int64, ptr, ptr, ptr, ptr, c_int64)
    lib.pydamon_update_rate.restype = c_int64
    lib.pydamon_check_update.argtypes = (c_int, ptr, c_int64, ptr, ptr, ptr, ptr, c_int64, ptr)
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


def prepare(
    phys: pagefacts.PhysPages,
    pagemap: pagefacts.Pagemap | None,
    addrs: IntArray,
    native: bool = True,
) -> IntArray:
    """Translate sampling addresses to trackable PFNs (-1: not checkable) and mark them idle.

    ``pagemap`` None means ``addrs`` are physical addresses (paddr).
    """
    lib = load() if native else None
    if lib is not None:
        addrs = np.ascontiguousarray(addrs, dtype=np.int64)
        pfns = np.empty(len(addrs), np.int64)
        ret = lib.pydamon_prepare(
            pagemap.fd if pagemap is not None else -1,
            phys.kpageflags_fd,
            phys.bitmap_fd,
            addrs.ctypes.data,
            len(addrs),
            pfns.ctypes.data,
        )
        if ret == -1:
            raise MemoryError("pydamon_prepare: out of memory")
        return pfns
    addr_list = addrs.tolist()
    raw = (
        pagemap.pfns(addr_list)
        if pagemap is not None
        else [a >> pagefacts.PAGE_SHIFT for a in addr_list]
    )
    out = [phys.trackable(p) if p > 0 else -1 for p in raw]
    phys.mark_idle(out)
    return np.array(out, np.int64)


def check(phys: pagefacts.PhysPages, pfns: IntArray, native: bool = True) -> BoolArray:
    """Whether each PFN's page was accessed since :func:`prepare` (-1: not accessed)."""
    lib = load() if native else None
    if lib is not None:
        pfns = np.ascontiguousarray(pfns, dtype=np.int64)
        accessed = np.empty(len(pfns), np.uint8)
        ret = lib.pydamon_check(phys.bitmap_fd, pfns.ctypes.data, len(pfns), accessed.ctypes.data)
        if ret == -1:
            raise MemoryError("pydamon_check: out of memory")
        return accessed.view(np.bool_)
    return ~np.array(phys.idle(pfns.tolist()), np.bool_)


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
    """

    def __init__(self, rng: np.random.Generator, native: bool = True) -> None:
        self.lib = load() if native else None
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
            self.pfns = prepare(phys, pagemap, regions.pick_sampling_addrs(self.rng), False)
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
            sampling_addr,
            self.pfns.ctypes.data,
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
        if len(self.pfns) != n:  # regions changed since prepare (never between the two)
            accessed = np.zeros(n, np.bool_)
        elif self.lib is None:
            accessed = check(phys, self.pfns, False)
        else:
            ptrs = self._pointers(regions)
            ret = self.lib.pydamon_check_update(
                phys.bitmap_fd,
                self.pfns.ctypes.data,
                n,
                self._accessed.ctypes.data,
                ptrs[3],
                ptrs[4],
                ptrs[5],
                max_nr_accesses,
                self._max_nr_ptr,
            )
            if ret == -1:
                raise MemoryError("pydamon_check_update: out of memory")
            return int(self._max_nr[0])
        regions.update_access_rate(accessed, max_nr_accesses)
        return int(regions.nr_accesses.max()) if n else 0


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
