"""The per-sample access-check loop: a small C helper when a C compiler is around, else Python.

``_fastpath.c`` is compiled on first use with ``cc`` into a cache directory
(``$PYDAMON_NATIVE_DIR``, else ``$XDG_CACHE_HOME/pydamon`` or ``~/.cache/pydamon``) and loaded
with ctypes. Three paths, picked once per process (:func:`path`), all giving the same results
(the host tests compare them):

- ``c`` (the default): the C helper with one ``pread``/``pwrite`` per entry;
- ``io_uring`` (``PYDAMON_IO_URING=1``): the C helper batches each phase of a sample (pagemap
  reads, kpageflags reads, idle-bitmap writes; bitmap reads at check time) into one io_uring
  submission, so a sample costs O(1) user/kernel transitions instead of O(regions). procfs and
  sysfs files cannot do non-blocking I/O, so io_uring runs every operation in an io-wq worker
  thread; that hand-off did not pay for itself in the measurements (docs/real-memory.md), hence
  opt-in. Its workers: ``$PYDAMON_IO_URING_WORKERS`` (default 1: the batch runs in order on one
  worker; 0: the kernel's default), on the monitor thread's allowed CPUs unless
  ``PYDAMON_IO_URING_PIN=0``. Where io_uring is unavailable (ENOSYS; EPERM from
  ``kernel.io_uring_disabled`` or seccomp) the ``c`` path is used;
- ``python``: no compiler, or ``PYDAMON_NATIVE=0``.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pydamon.core.regions import Regions
from pydamon.ops import _proc

SOURCE = Path(__file__).with_name("_fastpath.c")
#: Submission-queue slots of a ring (bigger batches go in several submissions).
RING_ENTRIES = 1024

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def _cache_dir() -> Path:
    override = os.environ.get("PYDAMON_NATIVE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pydamon"


@cache
def load() -> ctypes.CDLL | None:
    """The compiled helper, or None (no compiler, build failed, or PYDAMON_NATIVE=0)."""
    if os.environ.get("PYDAMON_NATIVE", "1") == "0" or not SOURCE.exists():
        return None
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    lib_path = _cache_dir() / f"fastpath-{digest}.so"
    if not lib_path.exists():
        cc = shutil.which(os.environ.get("CC", "cc"))
        if cc is None:
            return None
        try:
            lib_path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=lib_path.parent) as tmp:
                out = Path(tmp) / lib_path.name
                subprocess.run(
                    [cc, "-O2", "-shared", "-fPIC", "-o", str(out), str(SOURCE)],
                    check=True,
                    capture_output=True,
                    timeout=120,
                )
                os.replace(out, lib_path)
        except (OSError, subprocess.SubprocessError):
            return None
    try:
        lib = ctypes.CDLL(str(lib_path))
    except OSError:
        return None
    # Plain addresses (c_void_p) rather than typed pointers: building ctypes pointer objects
    # costs more than the call itself under emulation.
    ptr = ctypes.c_void_p
    c_int, c_int64 = ctypes.c_int, ctypes.c_int64
    lib.pydamon_prepare.argtypes = (ptr, c_int, c_int, c_int, ptr, c_int64, ptr)
    lib.pydamon_prepare.restype = c_int64
    lib.pydamon_check.argtypes = (ptr, c_int, ptr, c_int64, ptr)
    lib.pydamon_check.restype = c_int
    lib.pydamon_pick_prepare.argtypes = (ptr, c_int, c_int, c_int, ptr, ptr, c_int64, ptr, ptr, ptr)
    lib.pydamon_pick_prepare.restype = c_int64
    lib.pydamon_update_rate.argtypes = (c_int64, ptr, ptr, ptr, ptr, c_int64)
    lib.pydamon_update_rate.restype = c_int64
    lib.pydamon_check_update.argtypes = (ptr, c_int, ptr, c_int64, ptr, ptr, ptr, ptr, c_int64, ptr)
    lib.pydamon_check_update.restype = c_int
    lib.pydamon_ring_open.argtypes = (ctypes.c_uint, c_int, c_int, ptr)
    lib.pydamon_ring_open.restype = ptr
    lib.pydamon_ring_close.argtypes = (ptr,)
    lib.pydamon_ring_close.restype = None
    return lib


class Ring:
    """An io_uring instance of the C helper (one per :class:`_proc.PhysPages`)."""

    def __init__(self, lib: ctypes.CDLL, handle: int) -> None:
        self.lib = lib
        self.handle: int | None = handle

    #: set when a batch failed mid-use (results were redone synchronously): not used again
    broken = False

    def close(self) -> None:
        if self.handle is not None:
            self.lib.pydamon_ring_close(self.handle)
            self.handle = None


#: why the io_uring path is not used in this process (None: used, or not tried yet)
_ring_error: str | None = None


def _workers() -> int:
    try:
        return max(int(os.environ.get("PYDAMON_IO_URING_WORKERS", "1")), 0)
    except ValueError:
        return 1


def io_uring_wanted() -> bool:
    """Whether the io_uring path is asked for (``PYDAMON_IO_URING=1``)."""
    return os.environ.get("PYDAMON_IO_URING", "0") == "1"


def open_ring() -> Ring | None:
    """A new ring, or None where io_uring is unavailable.

    The first failure is remembered (:func:`io_uring_error`): later calls do not retry.
    """
    global _ring_error
    lib = load()
    if lib is None or _ring_error is not None:
        return None
    err = ctypes.c_int(0)
    pin = os.environ.get("PYDAMON_IO_URING_PIN", "1") != "0"
    handle = lib.pydamon_ring_open(RING_ENTRIES, _workers(), int(pin), ctypes.addressof(err))
    if not handle:
        _ring_error = f"io_uring_setup failed: {errno.errorcode.get(err.value, err.value)}"
        return None
    return Ring(lib, handle)


def io_uring_error() -> str | None:
    """Why io_uring could not be set up (None: it could, or was not tried)."""
    return _ring_error


@cache
def path() -> str:
    """The path this process uses: ``io_uring``, ``c`` (one syscall per entry) or ``python``."""
    if load() is None:
        return "python"
    if not io_uring_wanted():
        return "c"
    ring = open_ring()
    if ring is None:
        return "c"
    ring.close()
    return "io_uring"


def _ring(phys: _proc.PhysPages) -> int | None:
    """The handle of ``phys``'s ring, opened on first use (None: the per-syscall path)."""
    ring = phys.ring
    if ring is None:
        if phys.ring_tried:
            return None
        phys.ring_tried = True
        if not io_uring_wanted():
            return None
        ring = phys.ring = open_ring()
        if ring is None:
            return None
    return ring.handle


def _ring_failed(phys: _proc.PhysPages) -> None:
    """The ring failed mid-use (rare; that batch was redone synchronously): stop using it."""
    if phys.ring is not None:
        phys.ring.broken = True
        phys.ring.close()
        phys.ring = None


def prepare(
    phys: _proc.PhysPages, pagemap: _proc.Pagemap | None, addrs: IntArray, native: bool = True
) -> IntArray:
    """Translate sampling addresses to trackable PFNs (-1: not checkable) and mark them idle.

    ``pagemap`` None means ``addrs`` are physical addresses (paddr).
    """
    lib = load() if native else None
    if lib is not None:
        addrs = np.ascontiguousarray(addrs, dtype=np.int64)
        pfns = np.empty(len(addrs), np.int64)
        ret = lib.pydamon_prepare(
            _ring(phys),
            pagemap.fd if pagemap is not None else -1,
            phys.kpageflags_fd,
            phys.bitmap_fd,
            addrs.ctypes.data,
            len(addrs),
            pfns.ctypes.data,
        )
        if ret < 0:
            if ret == -1:
                raise MemoryError("pydamon_prepare: out of memory")
            _ring_failed(phys)
        return pfns
    addr_list = addrs.tolist()
    raw = (
        pagemap.pfns(addr_list)
        if pagemap is not None
        else [a >> _proc.PAGE_SHIFT for a in addr_list]
    )
    out = [phys.trackable(p) if p > 0 else -1 for p in raw]
    phys.mark_idle(out)
    return np.array(out, np.int64)


def check(phys: _proc.PhysPages, pfns: IntArray, native: bool = True) -> BoolArray:
    """Whether each PFN's page was accessed since :func:`prepare` (-1: not accessed)."""
    lib = load() if native else None
    if lib is not None:
        pfns = np.ascontiguousarray(pfns, dtype=np.int64)
        accessed = np.empty(len(pfns), np.uint8)
        ret = lib.pydamon_check(
            _ring(phys), phys.bitmap_fd, pfns.ctypes.data, len(pfns), accessed.ctypes.data
        )
        if ret < 0:
            if ret == -1:
                raise MemoryError("pydamon_check: out of memory")
            _ring_failed(phys)
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
        self, phys: _proc.PhysPages, pagemap: _proc.Pagemap | None, regions: Regions
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
            _ring(phys),
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
        if ret < 0:
            if ret == -1:
                raise MemoryError("pydamon_pick_prepare: out of memory")
            _ring_failed(phys)

    def skip(self, regions: Regions) -> None:
        """Nothing to check this sample (the target is gone): every region reads not accessed."""
        self.pfns = np.full(len(regions), -1, np.int64)

    def check_update(self, phys: _proc.PhysPages, regions: Regions, max_nr_accesses: int) -> int:
        """Read back the idle bits and count the accesses; the highest nr_accesses."""
        n = len(regions)
        if len(self.pfns) != n:  # regions changed since prepare (never between the two)
            accessed = np.zeros(n, np.bool_)
        elif self.lib is None:
            accessed = check(phys, self.pfns, False)
        else:
            ptrs = self._pointers(regions)
            ret = self.lib.pydamon_check_update(
                _ring(phys),
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
            if ret < 0:
                if ret == -1:
                    raise MemoryError("pydamon_check_update: out of memory")
                _ring_failed(phys)
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
