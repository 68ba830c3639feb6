"""Ownership of a record file being written: one writer at a time, old records kept.

A writer holds an exclusive ``flock`` on ``<record>.lock`` (a sibling, because finalizing
replaces the record's inode) for as long as it writes; the lock file names the holder, so a
second writer is refused in one line that says who has the file. The kernel drops the lock when
the holder dies, even by ``kill -9``: a stale lock file never blocks anyone.

Before writing, an existing record is kept as ``<record>.old`` (damo's way) unless forced.
"""

from __future__ import annotations

import fcntl
import os

from pydamon.record.model import RecordError

LOCK_SUFFIX = ".lock"
OLD_SUFFIX = ".old"


class RecordBusy(RecordError):
    """The record file is being written by another monitor."""


def lock_path(path: str) -> str:
    return path + LOCK_SUFFIX


class OutputLock:
    """An exclusive lock on writing the record ``path``; :meth:`release` (or ``with``) frees it.

    ``holder`` says who holds it (e.g. ``pydamon start NAME``), for the refusal of the next
    writer.
    """

    def __init__(self, path: str | os.PathLike[str], holder: str = "") -> None:
        self.path = os.fspath(path)
        self.lock_file = lock_path(self.path)
        self.holder = holder
        self._fd: int | None = None
        self._acquire()

    def _acquire(self) -> None:
        for _ in range(10):
            try:
                fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                msg = f"{self.lock_file}: cannot create lock file ({err.strerror})"
                raise RecordError(msg) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                who = _read_holder(fd)
                os.close(fd)
                raise RecordBusy(
                    f"{self.path} is being written by {who}; stop that monitor or choose "
                    "another output file"
                ) from None
            # the previous holder may have unlinked the file between our open and flock: then
            # we locked a file nobody else will see; retry on the current one
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_file).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\t{self.holder}\n".encode(), 0)
                self._fd = fd
                return
            os.close(fd)
        raise RecordBusy(f"{self.path}: its lock file keeps changing; another writer is busy")

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Unlock and remove the lock file (safe to call twice)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.lock_file)
        except OSError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    """'pid N (what)' from a held lock file, or 'another process' if it does not say."""
    try:
        text = os.pread(fd, 512, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    pid, _, what = text.partition("\t")
    if not pid.isdigit():
        return "another process"
    return f"pid {pid} ({what})" if what else f"pid {pid}"


def keep_old(path: str) -> str | None:
    """Move an existing record ``path`` to ``path.old`` (replacing an older one); returns the
    new name, or None if there was nothing to keep."""
    if not os.path.lexists(path):
        return None
    old = path + OLD_SUFFIX
    try:
        os.replace(path, old)
    except OSError as err:
        raise RecordError(f"cannot keep the existing {path} as {old}: {err.strerror}") from None
    return old


def claim_output(path: str, *, holder: str, force: bool = False) -> OutputLock:
    """Lock ``path`` for writing, then keep an existing record as ``.old`` unless ``force``
    (then it is overwritten). Raises :class:`RecordBusy` if another writer has it."""
    lock = OutputLock(path, holder)
    if not force:
        try:
            keep_old(path)
        except RecordError:
            lock.release()
            raise
    return lock
