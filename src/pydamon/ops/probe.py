"""What the operations sets on real memory need from this kernel, probed once.

The page-level interfaces (page_idle, pagemap, kpageflags, madvise, process_madvise) are this
package's to probe; :mod:`pydamon.features` adds the rest of the system for ``pydamon features``.
Every check only reads, except that the page_idle check writes the idle bit of one page of this
process's own memory. :func:`require` raises :class:`~pydamon.core.errors.FeatureMissing` with a
one-line message saying what is missing and what to do. :func:`access_check_path` says whether
the per-sample access checks run in the compiled helper or in Python.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from pydamon.core.errors import FeatureMissing
from pydamon.core.regions import Regions
from pydamon.ops import _native, pagefacts
from pydamon.ops._native import AccessCheckPath
from pydamon.ops.hugemaps import HugeMappings
from pydamon.ops.madvise import MADV, process_madvise_available


@dataclass(frozen=True)
class Feature:
    name: str
    available: bool
    detail: str
    #: What to do when it is missing ("" if nothing can be done or it is available).
    fix: str = ""


def _address_of(buf: mmap.mmap) -> int:
    return int(np.frombuffer(buf, np.uint8).ctypes.data)


def _check_page_idle() -> Feature:
    path = pagefacts.PAGE_IDLE_BITMAP
    if not os.path.exists(path):
        return Feature(
            "page_idle",
            False,
            f"{path} does not exist",
            "use a kernel built with CONFIG_IDLE_PAGE_TRACKING=y",
        )
    try:
        fd = os.open(path, os.O_RDWR)
    except PermissionError:
        return Feature("page_idle", False, f"{path} is not writable by this user", "run as root")
    try:
        os.pread(fd, 8, 0)
    except OSError as err:
        return Feature("page_idle", False, f"{path}: {err.strerror}", "run as root")
    finally:
        os.close(fd)
    return Feature("page_idle", True, f"{path} readable and writable")


def _check_pagemap() -> Feature:
    buf = mmap.mmap(-1, mmap.PAGESIZE)
    buf[0] = 1  # fault the page in
    addr = _address_of(buf)
    try:
        pagemap = pagefacts.Pagemap("self")
        entry = int(pagemap.entries(np.array([addr], np.int64))[0])
        pagemap.close()
    except OSError as err:
        return Feature("pagemap_pfn", False, f"/proc/self/pagemap: {err.strerror}", "run as root")
    if not entry & pagefacts.PM_PRESENT:
        return Feature("pagemap_pfn", False, "a touched page reads as not present", "")
    if not entry & pagefacts.PM_PFN_MASK:
        return Feature(
            "pagemap_pfn",
            False,
            "page frame numbers read as 0 (hidden from unprivileged readers)",
            "run as root (CAP_SYS_ADMIN)",
        )
    return Feature("pagemap_pfn", True, "page frame numbers visible in /proc/PID/pagemap")


def _check_kpageflags() -> Feature:
    try:
        fd = os.open(pagefacts.KPAGEFLAGS, os.O_RDONLY)
    except FileNotFoundError:
        return Feature(
            "kpageflags",
            False,
            f"{pagefacts.KPAGEFLAGS} missing",
            "use a kernel with CONFIG_PROC_PAGE_MONITOR",
        )
    except PermissionError:
        return Feature("kpageflags", False, f"{pagefacts.KPAGEFLAGS} not readable", "run as root")
    os.close(fd)
    return Feature("kpageflags", True, f"{pagefacts.KPAGEFLAGS} readable")


def _check_madvise(name: str) -> Feature:
    # A zero-length madvise() returns 0 for advice the kernel knows and EINVAL otherwise.
    libc = ctypes.CDLL(None, use_errno=True)
    buf = mmap.mmap(-1, mmap.PAGESIZE)
    ret = libc.madvise(ctypes.c_void_p(_address_of(buf)), ctypes.c_size_t(0), MADV[name])
    key = f"madv_{name}"
    if ret == 0:
        return Feature(key, True, f"madvise(MADV_{name.upper()}) known to this kernel")
    return Feature(key, False, f"madvise(MADV_{name.upper()}) unknown to this kernel", "")


def _check_process_madvise() -> Feature:
    if process_madvise_available():
        return Feature("process_madvise", True, "process_madvise(2) available")
    return Feature("process_madvise", False, "process_madvise(2) missing", "use Linux >= 5.10")


def access_check_path() -> AccessCheckPath:
    """Which access-check path real-memory monitoring uses here, and why: ``c`` (the helper
    compiled at install time, with the file it was loaded from) or ``python``."""
    return _native.status()


@cache
def page_features() -> dict[str, Feature]:
    """The page-level features, probed once per process."""
    checks = [
        _check_page_idle(),
        _check_pagemap(),
        _check_kpageflags(),
        _check_process_madvise(),
        _check_madvise("pageout"),
        _check_madvise("cold"),
        _check_madvise("collapse"),
    ]
    return {f.name: f for f in checks}


#: What each operations set needs.
NEEDS = {
    "vaddr": ("page_idle", "pagemap_pfn", "kpageflags"),
    "fvaddr": ("page_idle", "pagemap_pfn", "kpageflags"),
    "paddr": ("page_idle", "kpageflags"),
}


def require(ops_name: str) -> None:
    """Raise :class:`FeatureMissing` unless everything ``ops_name`` needs is here."""
    features = page_features()
    for name in NEEDS.get(ops_name, ()):
        f = features[name]
        if not f.available:
            fix = f"; {f.fix}" if f.fix else ""
            raise FeatureMissing(f"{ops_name} monitoring needs {name}: {f.detail}{fix}")


# -- the access check's system calls ----------------------------------------------------------


def syscalls_per_region_sample(targets: Iterable[Any]) -> float | None:
    """System calls per region-sample of the access checks of ``targets`` so far (their
    operations sets' samplers), or None when none checks real memory or none sampled yet."""
    calls = region_samples = 0
    for t in targets:
        state = getattr(t, "ops_private", None)
        sampler = state if isinstance(state, _native.Sampler) else getattr(state, "sampler", None)
        if isinstance(sampler, _native.Sampler):
            calls += int(sampler.stats[_native.STAT_SYSCALLS])
            region_samples += int(sampler.stats[_native.STAT_REGION_SAMPLES])
    return calls / region_samples if region_samples else None


#: the measurement of :func:`measure_access_check`: regions of this process's own memory
MEASURE_NR_REGIONS = 64
MEASURE_REGION_SIZE = 64 << 10
MEASURE_NR_SAMPLES = 4


def measure_access_check() -> Feature:
    """System calls per region-sample of the access check, measured on this process's own
    memory (64 regions of a 4 MiB buffer it wrote, 4 samples, the path :func:`access_check_path`
    names). Needs what vaddr needs; marks only this process's pages idle."""
    name = "access_check_syscalls"
    features = page_features()
    missing = [n for n in NEEDS["vaddr"] if not features[n].available]
    if missing:
        return Feature(name, False, f"not measured: needs {', '.join(missing)} (see above)")
    size = MEASURE_NR_REGIONS * MEASURE_REGION_SIZE
    buf = mmap.mmap(-1, size)
    view = np.frombuffer(buf, np.uint8)
    try:
        view[::4096] = 1
        base = int(view.ctypes.data)
        regions = Regions(
            [
                (base + i * MEASURE_REGION_SIZE, base + (i + 1) * MEASURE_REGION_SIZE)
                for i in range(MEASURE_NR_REGIONS)
            ]
        )
        phys = pagefacts.PhysPages()
        pagemap = pagefacts.Pagemap("self")
        try:
            huge = HugeMappings(os.getpid())
            huge.update()
            sampler = _native.Sampler(np.random.default_rng(0))
            sampler.huge = huge.ranges
            for i in range(MEASURE_NR_SAMPLES):
                sampler.pick_prepare(phys, pagemap, regions)
                if i % 2:
                    view[::8192] += 1  # half the samples see accesses, half none
                sampler.check_update(phys, regions, MEASURE_NR_SAMPLES)
        finally:
            pagemap.close()
            phys.close()
    except OSError as err:
        return Feature(name, False, f"not measured: {err.strerror}")
    finally:
        del view
        buf.close()
    per = sampler.syscalls_per_region_sample() or 0.0
    return Feature(
        name,
        True,
        f"{per:.2f} system calls per region-sample ({_native.path()} path, measured on "
        f"{MEASURE_NR_REGIONS} regions of this process's memory, {MEASURE_NR_SAMPLES} samples)",
    )
