"""The per-sample access-check loop: a small C helper when a C compiler is around, else Python.

``_fastpath.c`` is compiled on first use with ``cc`` into a cache directory
(``$PYDAMON_NATIVE_DIR``, else ``$XDG_CACHE_HOME/pydamon`` or ``~/.cache/pydamon``) and loaded
with ctypes. ``PYDAMON_NATIVE=0`` forces the pure-Python path; both give the same results (the
host tests compare them).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pydamon.ops import _proc

SOURCE = Path(__file__).with_name("_fastpath.c")

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
    lib.pydamon_prepare.argtypes = (
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ptr,
        ctypes.c_int64,
        ptr,
    )
    lib.pydamon_prepare.restype = ctypes.c_int64
    lib.pydamon_check.argtypes = (ctypes.c_int, ptr, ctypes.c_int64, ptr)
    lib.pydamon_check.restype = None
    return lib


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
        lib.pydamon_prepare(
            pagemap.fd if pagemap is not None else -1,
            phys.kpageflags_fd,
            phys.bitmap_fd,
            addrs.ctypes.data,
            len(addrs),
            pfns.ctypes.data,
        )
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
        lib.pydamon_check(
            phys.bitmap_fd,
            pfns.ctypes.data,
            len(pfns),
            accessed.ctypes.data,
        )
        return accessed.view(np.bool_)
    return ~np.array(phys.idle(pfns.tolist()), np.bool_)
