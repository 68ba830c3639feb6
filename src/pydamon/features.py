"""What the running kernel offers pydamon, detected once (``pydamon features``).

Every check only reads (the page_idle bitmap check writes the idle bit of one page of this
process's own memory; the DAMON sysfs check only looks whether the directory exists: pydamon never
writes there). :func:`require` raises :class:`FeatureMissing` with a one-line message saying what
is missing and what to do.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from dataclasses import asdict, dataclass
from functools import cache

import numpy as np

from pydamon.ops import _proc
from pydamon.ops.madvise import MADV, process_madvise_available


class RealMemoryError(OSError):
    """An error of real-memory monitoring a user can act on (one-line message)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def __str__(self) -> str:
        return str(self.args[0])


class FeatureMissing(RealMemoryError):
    """The kernel lacks a feature, or this process lacks a privilege, that is needed."""


class TargetGone(RealMemoryError):
    """A monitoring target process does not exist (any more)."""


@dataclass(frozen=True)
class Feature:
    name: str
    available: bool
    detail: str
    #: What to do when it is missing ("" if nothing can be done or it is available).
    fix: str = ""


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _address_of(buf: mmap.mmap) -> int:
    return int(np.frombuffer(buf, np.uint8).ctypes.data)


def _check_page_idle() -> Feature:
    path = _proc.PAGE_IDLE_BITMAP
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
        pagemap = _proc.Pagemap("self")
        entry = int(pagemap.entries(np.array([addr], np.int64))[0])
        pagemap.close()
    except OSError as err:
        return Feature("pagemap_pfn", False, f"/proc/self/pagemap: {err.strerror}", "run as root")
    if not entry & _proc.PM_PRESENT:
        return Feature("pagemap_pfn", False, "a touched page reads as not present", "")
    if not entry & _proc.PM_PFN_MASK:
        return Feature(
            "pagemap_pfn",
            False,
            "page frame numbers read as 0 (hidden from unprivileged readers)",
            "run as root (CAP_SYS_ADMIN)",
        )
    return Feature("pagemap_pfn", True, "page frame numbers visible in /proc/PID/pagemap")


def _check_kpageflags() -> Feature:
    try:
        fd = os.open(_proc.KPAGEFLAGS, os.O_RDONLY)
    except FileNotFoundError:
        return Feature(
            "kpageflags",
            False,
            f"{_proc.KPAGEFLAGS} missing",
            "use a kernel with CONFIG_PROC_PAGE_MONITOR",
        )
    except PermissionError:
        return Feature("kpageflags", False, f"{_proc.KPAGEFLAGS} not readable", "run as root")
    os.close(fd)
    return Feature("kpageflags", True, f"{_proc.KPAGEFLAGS} readable")


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


def _check_swap() -> Feature:
    text = _read("/proc/swaps") or ""
    devices = [line.split()[0] for line in text.splitlines()[1:] if line.strip()]
    if devices:
        return Feature("swap", True, f"active swap: {', '.join(devices)}")
    return Feature("swap", False, "no active swap (pageout of anonymous memory does nothing)", "")


def _check_thp() -> Feature:
    text = _read("/sys/kernel/mm/transparent_hugepage/enabled")
    if text is None:
        return Feature("thp", False, "transparent huge pages not built in", "")
    mode = text[text.find("[") + 1 : text.find("]")] if "[" in text else text.strip()
    return Feature("thp", mode != "never", f"transparent huge pages: {mode}")


def _check_psi() -> Feature:
    if _read("/proc/pressure/memory") is not None:
        return Feature("psi", True, "/proc/pressure/memory readable")
    return Feature(
        "psi", False, "/proc/pressure/memory unavailable", "kernel CONFIG_PSI=y (or psi=1)"
    )


def _check_cgroup2() -> Feature:
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return Feature("cgroup2", True, "cgroup v2 mounted at /sys/fs/cgroup")
    return Feature("cgroup2", False, "no cgroup v2 at /sys/fs/cgroup", "")


def _check_damon_sysfs() -> Feature:
    # Read-only: never write under this tree.
    path = "/sys/kernel/mm/damon/admin"
    if not os.path.isdir(path):
        return Feature("kernel_damon_sysfs", False, f"{path} missing", "")
    nr = _read(f"{path}/kdamonds/nr_kdamonds")
    return Feature(
        "kernel_damon_sysfs",
        True,
        f"{path} present ({(nr or '?').strip()} kdamonds configured)",
    )


def _check_root() -> Feature:
    if os.geteuid() == 0:
        return Feature("root", True, "running as root")
    return Feature("root", False, f"running as uid {os.geteuid()}", "run as root")


@cache
def detect() -> dict[str, Feature]:
    """All features, detected once per process."""
    checks = [
        _check_root(),
        _check_page_idle(),
        _check_pagemap(),
        _check_kpageflags(),
        _check_process_madvise(),
        _check_madvise("pageout"),
        _check_madvise("cold"),
        _check_madvise("collapse"),
        _check_swap(),
        _check_thp(),
        _check_psi(),
        _check_cgroup2(),
        _check_damon_sysfs(),
    ]
    return {f.name: f for f in checks}


def as_dict() -> dict[str, dict[str, object]]:
    return {name: asdict(f) for name, f in detect().items()}


#: What each operations set needs.
NEEDS = {
    "vaddr": ("page_idle", "pagemap_pfn", "kpageflags"),
    "fvaddr": ("page_idle", "pagemap_pfn", "kpageflags"),
    "paddr": ("page_idle", "kpageflags"),
}


def require(ops_name: str) -> None:
    """Raise :class:`FeatureMissing` unless everything ``ops_name`` needs is here."""
    features = detect()
    for name in NEEDS.get(ops_name, ()):
        f = features[name]
        if not f.available:
            fix = f"; {f.fix}" if f.fix else ""
            raise FeatureMissing(f"{ops_name} monitoring needs {name}: {f.detail}{fix}")
