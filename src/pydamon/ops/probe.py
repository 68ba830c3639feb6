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
from dataclasses import dataclass
from functools import cache

import numpy as np

from pydamon.core.errors import FeatureMissing
from pydamon.ops import _native, pagefacts
from pydamon.ops._native import AccessCheckPath
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
