"""``process_madvise(2)``, ``pidfd_open(2)`` and ``madvise(2)`` wrappers (x86-64, via ctypes).

Usable on their own::

    from pydamon.ops.madvise import MADV, PidFd, process_madvise
    with PidFd(pid) as pidfd:
        result = process_madvise(pidfd, [(start, end)], MADV["pageout"])

``process_madvise`` takes at most ``IOV_MAX`` (1024) ranges per call and stops at the first range
it cannot advise; :func:`process_madvise` batches, and on an error retries the failed batch one
range at a time, so one bad range costs only itself. Errors per range are counted, not raised.

The kernel lets ``process_madvise`` act on *another* process only with ``MADV_COLD``,
``MADV_PAGEOUT``, ``MADV_WILLNEED`` and ``MADV_COLLAPSE``; ``hugepage``/``nohugepage`` work only on
the caller's own memory (:func:`madvise`).
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

SYS_PIDFD_OPEN = 434
SYS_PROCESS_MADVISE = 440
IOV_MAX = 1024

#: DAMOS action name -> madvise advice.
MADV: dict[str, int] = {
    "willneed": 3,
    "hugepage": 14,
    "nohugepage": 15,
    "cold": 20,
    "pageout": 21,
    "collapse": 25,
}
#: Advice process_madvise accepts for another process (process_madvise_remote_valid()).
REMOTE_ADVICE = frozenset({MADV["willneed"], MADV["cold"], MADV["pageout"], MADV["collapse"]})

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_libc.madvise.restype = ctypes.c_int


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def _errno_error(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def pidfd_open(pid: int) -> int:
    """A pidfd of ``pid`` (raises ``ProcessLookupError`` if it does not exist)."""
    fd = _libc.syscall(SYS_PIDFD_OPEN, ctypes.c_int(pid), ctypes.c_uint(0))
    if fd < 0:
        err = ctypes.get_errno()
        if err == errno.ESRCH:
            raise ProcessLookupError(err, f"process {pid} does not exist")
        raise OSError(err, f"pidfd_open({pid}): {os.strerror(err)}")
    return int(fd)


class PidFd:
    """A pidfd as a context manager."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd = pidfd_open(pid)

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> PidFd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class MadviseResult:
    """What advising a set of ranges did."""

    sz_advised: int = 0
    nr_ranges_failed: int = 0
    #: errno -> number of ranges that failed with it
    errors: dict[int, int] = field(default_factory=dict)

    def add_error(self, err: int) -> None:
        self.nr_ranges_failed += 1
        self.errors[err] = self.errors.get(err, 0) + 1

    def error_text(self) -> str:
        return ", ".join(f"{os.strerror(e)} x{n}" for e, n in sorted(self.errors.items()))


def _process_madvise_raw(pidfd: int, ranges: Sequence[tuple[int, int]], advice: int) -> int:
    iov = (_Iovec * len(ranges))(*[_Iovec(s, e - s) for s, e in ranges])
    ret = _libc.syscall(
        SYS_PROCESS_MADVISE,
        ctypes.c_int(pidfd),
        iov,
        ctypes.c_size_t(len(ranges)),
        ctypes.c_int(advice),
        ctypes.c_uint(0),
    )
    if ret < 0:
        raise _errno_error("process_madvise")
    return int(ret)


def process_madvise(
    pidfd: int | PidFd, ranges: Sequence[tuple[int, int]], advice: int
) -> MadviseResult:
    """Advise ``[start, end)`` ranges of the process behind ``pidfd``; errors are counted."""
    fd = pidfd.fileno() if isinstance(pidfd, PidFd) else pidfd
    result = MadviseResult()
    ranges = [(s, e) for s, e in ranges if e > s]
    for i in range(0, len(ranges), IOV_MAX):
        batch = ranges[i : i + IOV_MAX]
        total = sum(e - s for s, e in batch)
        try:
            done = _process_madvise_raw(fd, batch, advice)
        except OSError as err:
            if err.errno in (errno.ENOSYS, errno.ESRCH, errno.EPERM, errno.EBADF):
                raise  # nothing in this batch can work: let the caller say why
            done = -1
        if done == total:
            result.sz_advised += total
            continue
        # Partial or failed: redo one range at a time to know which ones fail.
        for s, e in batch:
            try:
                result.sz_advised += _process_madvise_raw(fd, [(s, e)], advice)
            except OSError as err:
                result.add_error(err.errno or 0)
    return result


def madvise(ranges: Sequence[tuple[int, int]], advice: int) -> MadviseResult:
    """``madvise(2)`` on this process's own ranges; errors are counted."""
    result = MadviseResult()
    for s, e in ranges:
        if e <= s:
            continue
        if _libc.madvise(ctypes.c_void_p(s), ctypes.c_size_t(e - s), ctypes.c_int(advice)) == 0:
            result.sz_advised += e - s
        else:
            result.add_error(ctypes.get_errno())
    return result


def process_madvise_available() -> bool:
    """Whether the kernel has process_madvise (an invalid call fails with EBADF, not ENOSYS)."""
    ret = _libc.syscall(SYS_PROCESS_MADVISE, -1, None, 0, 0, 0)
    return not (ret < 0 and ctypes.get_errno() == errno.ENOSYS)
