"""File access to a DAMON sysfs tree (the kernel's ``mm/damon/sysfs-common.c`` side).

Everything the kernel backend reads or writes goes through a :class:`SysfsIO` so that host tests
can run it on a tree under a temporary directory, with a subclass that does what the kernel does
on writes (create the children of a ``nr_*`` file, reject unknown names). :class:`Sysfs` binds an
IO to a root and turns ``OSError`` into one-line errors.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from pydamon.core.errors import FeatureMissing, RealMemoryError

#: The DAMON sysfs admin root of a running kernel.
DEFAULT_ROOT = "/sys/kernel/mm/damon/admin"
#: The kernel's ``ULONG_MAX``; sysfs ``unsigned long`` files take nothing larger.
ULONG_MAX = 2**64 - 1
#: How long a read or write that meets ``EBUSY`` is retried (see :meth:`Sysfs._retry_busy`).
BUSY_TIMEOUT_S = 15.0

_T = TypeVar("_T")


class SysfsIO:
    """Plain file IO on a sysfs tree: the kernel does the rest."""

    def read(self, path: str) -> str:
        with open(path) as f:
            return f.read()

    def write(self, path: str, value: str) -> None:
        # No O_CREAT: a file the kernel does not expose must fail (ENOENT), never appear.
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)


class KernelSysfsError(RealMemoryError):
    """The kernel refused a read or a write of its DAMON sysfs files (one-line message)."""


class KernelPrivilegeMissing(FeatureMissing):
    """Writing the DAMON sysfs files needs privileges this process lacks."""


class KdamondNotOwned(RealMemoryError):
    """A kdamond pydamon did not create would be changed: refused."""


class KernelFeatureMissing(FeatureMissing):
    """The kernel's DAMON lacks what a configuration needs.

    ``missing`` holds (what, first mainline release that has it) for each missing piece.
    """

    def __init__(self, missing: Sequence[tuple[str, str]]) -> None:
        self.missing = list(missing)
        parts = [f"{what} ({_since_text(since)})" for what, since in self.missing]
        super().__init__(f"this kernel's DAMON lacks {'; '.join(parts)}")


def _since_text(since: str) -> str:
    if since[:1].isdigit():
        return f"Linux {since}+"
    return since


def os_error_text(err: OSError) -> str:
    return err.strerror or os.strerror(err.errno or 0) or str(err)


class Sysfs:
    """A DAMON sysfs tree at ``root`` (``.../damon/admin``) accessed through ``io``.

    Paths are relative to the root, ``/``-separated. Numbers are written in decimal, booleans as
    ``Y``/``N``, as the kernel's ``kstrto*`` parsers take them.
    """

    def __init__(
        self,
        root: str = DEFAULT_ROOT,
        io: SysfsIO | None = None,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> None:
        self.root = root.rstrip("/") or "/"
        self.io = io if io is not None else SysfsIO()
        self.busy_timeout_s = busy_timeout_s

    def _retry_busy(self, op: Callable[[], _T]) -> _T:
        """``op()``, again while it fails with ``EBUSY``, for up to :attr:`busy_timeout_s`.

        The kernel's DAMON sysfs files take one lock for the whole tree with ``mutex_trylock``
        and return ``-EBUSY`` while anyone else holds it: another kdamond's ``commit``, or an
        ``update_schemes_tried_regions`` that holds it until its kdamond has answered (an
        aggregation or more). Two pydamon kdamonds, or pydamon beside damo, meet it routinely.
        """
        deadline = time.monotonic() + self.busy_timeout_s
        pause = 0.001
        while True:
            try:
                return op()
            except OSError as err:
                if err.errno != errno.EBUSY or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def exists(self, rel: str) -> bool:
        return self.io.exists(self.path(rel))

    def isdir(self, rel: str) -> bool:
        return self.io.isdir(self.path(rel))

    def listdir(self, rel: str) -> list[str]:
        try:
            return self.io.listdir(self.path(rel))
        except OSError as err:
            raise _read_error("list", self.path(rel), err) from None

    def read(self, rel: str) -> str:
        path = self.path(rel)
        try:
            return self._retry_busy(lambda: self.io.read(path)).strip()
        except OSError as err:
            raise _read_error("read", self.path(rel), err) from None

    def read_int(self, rel: str) -> int:
        text = self.read(rel)
        try:
            return int(text)
        except ValueError:
            raise KernelSysfsError(
                f"{self.path(rel)} holds {text!r}, not a number (not a DAMON sysfs tree?)"
            ) from None

    def read_bool(self, rel: str) -> bool:
        return self.read(rel) in ("Y", "y", "1")

    def write(self, rel: str, value: str | int | bool) -> None:
        if isinstance(value, bool):
            text = "Y" if value else "N"
        elif isinstance(value, int):
            text = str(value)
        else:
            text = value
        path = self.path(rel)
        try:
            self._retry_busy(lambda: self.io.write(path, text))
        except OSError as err:
            if err.errno in (errno.EACCES, errno.EPERM):
                raise KernelPrivilegeMissing(
                    f"cannot write {path}: {os_error_text(err)}; run as root"
                ) from None
            if err.errno == errno.EBUSY:
                raise KernelSysfsError(
                    f"the kernel refused {text!r} for {path}: busy for {self.busy_timeout_s:g} s "
                    "(a running kdamond, or another DAMON sysfs user holding its lock); retry "
                    "once it is done"
                ) from None
            raise KernelSysfsError(
                f"the kernel refused {text!r} for {path}: {os_error_text(err)}"
            ) from None

    def write_ulong(self, rel: str, value: int) -> None:
        self.write(rel, max(0, min(int(value), ULONG_MAX)))

    def write_nr(self, rel_dir: str, name: str, count: int) -> None:
        """Set ``rel_dir/nr_<name>`` to ``count`` unless it is already (writing it, even the same
        value, makes the kernel remove the children and create new ones with default values)."""
        nr_file = join(rel_dir, f"nr_{name}")
        if self.read_int(nr_file) != count:
            self.write(nr_file, count)


def _read_error(verb: str, path: str, err: OSError) -> RealMemoryError:
    if err.errno in (errno.EACCES, errno.EPERM):
        return KernelPrivilegeMissing(f"cannot {verb} {path}: {os_error_text(err)}; run as root")
    if err.errno == errno.EBUSY:
        return KernelSysfsError(
            f"cannot {verb} {path}: DAMON's sysfs stayed busy (another user holds its lock); "
            "retry once it is done"
        )
    return KernelSysfsError(f"cannot {verb} {path}: {os_error_text(err)}")


def join(*parts: str | int) -> str:
    return "/".join(str(p) for p in parts if str(p))
