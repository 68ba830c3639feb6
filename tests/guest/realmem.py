"""Helpers for guest tests: a running workload program (``python -m pydamon.workload``).

Import from guest test modules as ``from realmem import WorkloadProcess`` (pytest puts this
directory on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from typing import Any

import numpy as np

from pydamon.core import Snapshot
from pydamon.ops import pagefacts
from pydamon.ops.pagefacts import (
    KPF_ACTIVE,
    KPF_LRU,
    PM_PFN_MASK,
    PM_PRESENT,
    PM_SWAP,
    read_pagemap,
)


class WorkloadProcess:
    """A running ``python -m pydamon.workload`` with its areas' addresses."""

    def __init__(self, args: list[str], timeout_s: float = 120.0) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pydamon.workload", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        ready = self.read_event(timeout_s)
        if ready.get("event") != "ready":
            raise RuntimeError(f"workload did not start: {ready}")
        self.info = ready
        self.pid: int = ready["pid"]

    @property
    def areas(self) -> dict[str, tuple[int, int]]:
        return {a["name"]: (a["start"], a["end"]) for a in self.info["areas"]}

    def read_event(self, timeout_s: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"workload {self.args} sent nothing for {timeout_s} s")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"workload {self.args} exited ({self.proc.wait()})")
                return json.loads(line)

    def command(self, line: str, timeout_s: float = 120.0) -> dict[str, Any]:
        """Send one command and return its answer (see pydamon.workload.program)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        event = self.read_event(timeout_s)
        if event.get("event") == "error":
            raise RuntimeError(f"workload command {line!r} failed: {event['message']}")
        return event

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


def weighted_access(snap: Snapshot, start: int, end: int) -> float:
    """Byte-weighted mean nr_accesses of the snapshot over ``[start, end)``."""
    overlap = np.clip(np.minimum(snap.ends, end) - np.maximum(snap.starts, start), 0, None)
    total = int(overlap.sum())
    return float((overlap * snap.nr_accesses).sum()) / total if total else 0.0


def fraction_at_most(snap: Snapshot, start: int, end: int, nr_accesses: float) -> float:
    """The fraction of ``[start, end)``'s bytes in regions reading at most ``nr_accesses``."""
    overlap = np.clip(np.minimum(snap.ends, end) - np.maximum(snap.starts, start), 0, None)
    total = int(overlap.sum())
    return float(overlap[snap.nr_accesses <= nr_accesses].sum()) / total if total else 0.0


def ticks_per_sample(before: dict[str, Any], after: dict[str, Any], sample_us: int) -> float:
    """The workload's access ticks per sampling interval between two ``info`` answers."""
    samples = (after["time_s"] - before["time_s"]) * 1e6 / sample_us
    return (after["ticks"] - before["ticks"]) / samples


PAGE = 4096


def read_sysfs(path: str, busy_timeout_s: float = 15.0) -> str:
    """A DAMON sysfs file's text; retried while the kernel answers EBUSY (its files take one
    lock with mutex_trylock, held by whoever else is reading or committing)."""
    import errno

    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            with open(path) as f:
                return f.read()
        except OSError as err:
            if err.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise
        time.sleep(0.01)


def wait_for(cond: Any, timeout_s: float, poll_s: float = 1.0) -> bool:
    """Poll ``cond()`` every ``poll_s`` until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(poll_s)
    return False


def resident_and_swapped(pid: int, area: tuple[int, int]) -> tuple[int, int]:
    """Bytes of ``area`` present in memory and swapped out (pagemap bits 63 and 62)."""
    entries = read_pagemap(pid, *area)
    present = int(((entries & np.uint64(PM_PRESENT)) != 0).sum()) * PAGE
    swapped = int(((entries & np.uint64(PM_SWAP)) != 0).sum()) * PAGE
    return present, swapped


def frames(pid: int, area: tuple[int, int]) -> np.ndarray:
    """Page frame numbers of the area's present pages."""
    entries = read_pagemap(pid, *area)
    present = (entries & np.uint64(PM_PRESENT)) != 0
    return (entries[present] & np.uint64(PM_PFN_MASK)).astype(np.int64)


def active_share(pid: int, area: tuple[int, int]) -> float:
    """Share of the area's pages on an LRU list that are on the active one (kpageflags)."""
    fd = os.open("/proc/kpageflags", os.O_RDONLY)
    try:
        flags = pagefacts.read_entries(fd, frames(pid, area))  # one read per run of frames
    finally:
        os.close(fd)
    on_lru = pagefacts.flag(flags, KPF_LRU)
    return int((on_lru & pagefacts.flag(flags, KPF_ACTIVE)).sum()) / max(int(on_lru.sum()), 1)


def touch_remotely(pid: int, start: int, end: int) -> None:
    """Read every page through /proc/PID/mem: remote GUP (FOLL_TOUCH) marks each page accessed,
    as a read() of a file page would; twice moves it to the active LRU list."""
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for addr in range(start, end, 64 * PAGE):
            mem.seek(addr)
            mem.read(min(64 * PAGE, end - addr))
