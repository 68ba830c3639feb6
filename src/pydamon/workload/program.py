"""The workload program: real memory accessed in a known pattern.

Each area of the workload spec is an anonymous private ``mmap``. Every page holds one 8-byte header
word ``(area_index << 48) | page_index`` (the rest of the page is zero), written at start-up, so
the program can verify its data after memory management (pageout to swap, THP collapse...).

Accesses: in each *tick* (the spec's ``tick_us``, or ``--tick-ms``) every page of an area is
accessed with the current phase's probability ``p``. To stay cheap under emulation this is done
with numpy strided reads of the header words (one 8-byte read per touched page, never a Python
loop over pages): with ``k = floor(1/p)`` pages per stride, one tick touches every ``k``-th page
from a random offset, and a tick is skipped with probability ``1 - p*k``, so each page is
touched with probability ``p`` per tick. Hot spots do the same over their (moving) sub-range.

Protocol (all output is JSON lines on stdout):

- at start: ``{"event": "ready", "pid": ..., "areas": [{"name", "start", "end"}...], ...}``;
- commands, one per line on stdin: ``verify``, ``info``, ``pause``, ``resume``,
  ``unmap NAME``, ``map NAME SIZE`` (a new area, populated, not accessed by the pattern),
  ``exit``; each answers one line (``{"event": "<command>", ...}``; errors: ``"error"``);
- ``SIGUSR1`` runs ``verify``; ``SIGTERM``/``SIGINT`` exit cleanly (verifying first with
  ``--verify-at-exit``).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import select
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from pydamon import units
from pydamon.ops.sim.workloads import (
    PAGE_SIZE,
    WorkloadError,
    WorkloadSpec,
    get_workload,
    load_workload,
)

WORDS_PER_PAGE = PAGE_SIZE // 8
MADV_HUGEPAGE = 14
#: a PMD-mapped transparent huge page (x86-64)
HPAGE_SIZE = 2 << 20


class WorkloadArea:
    """One anonymous mapping of the workload."""

    def __init__(self, name: str, size_bytes: int, index: int, thp: bool = False) -> None:
        self.name = name
        self.index = index
        self.size_bytes = size_bytes
        self.nr_pages = size_bytes // PAGE_SIZE
        # With THP the area starts on a huge-page boundary and its last huge page lies in its
        # own mapping: else (kernels before 6.7 do not align anonymous mappings) a huge page
        # can straddle two adjacent areas, and a cold area's edge reads hot with its neighbour.
        slack = (-size_bytes % HPAGE_SIZE) + HPAGE_SIZE if thp else 0
        self._map: mmap.mmap | None = mmap.mmap(-1, size_bytes + slack, flags=mmap.MAP_PRIVATE)
        if thp:
            try:
                self._map.madvise(MADV_HUGEPAGE)
            except OSError:
                pass  # THP not available: run with small pages
        base = int(np.frombuffer(self._map, dtype=np.uint8, count=1).ctypes.data)
        self._offset = -base % HPAGE_SIZE if thp else 0
        words = self._words()
        self.start = int(words.ctypes.data)
        self.end = self.start + size_bytes
        #: The header word of every page (a strided view: touching it touches one word per page).
        self.headers: npt.NDArray[np.uint64] | None = words[::WORDS_PER_PAGE]
        del words

    def _words(self) -> npt.NDArray[np.uint64]:
        """The area's memory as 8-byte words."""
        assert self._map is not None
        count = self.size_bytes // 8
        return np.frombuffer(self._map, dtype=np.uint64, count=count, offset=self._offset)

    def expected_headers(self) -> npt.NDArray[np.uint64]:
        return (np.uint64(self.index) << np.uint64(48)) | np.arange(self.nr_pages, dtype=np.uint64)

    def populate(self) -> None:
        assert self.headers is not None
        self.headers[:] = self.expected_headers()

    def touch(self, lo_page: int, hi_page: int, stride: int, offset: int, write: bool) -> int:
        """Access every ``stride``-th page of ``[lo_page, hi_page)`` from ``offset``."""
        assert self.headers is not None
        view = self.headers[lo_page + offset : hi_page : stride]
        if write:
            np.bitwise_or(view, np.uint64(0), out=view)
        return int(view.sum())

    def verify(self) -> int:
        """Number of pages whose content is not what was written (reads every page)."""
        assert self._map is not None and self.headers is not None
        pages = self._words().reshape(self.nr_pages, WORDS_PER_PAGE)
        bad = self.headers != self.expected_headers()
        bad |= pages[:, 1:].any(axis=1)
        del pages
        return int(bad.sum())

    def unmap(self) -> None:
        self.headers = None
        if self._map is not None:
            self._map.close()
            self._map = None

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "start": self.start, "end": self.end}


@dataclass
class _Phase:
    end_us: int
    #: area name -> probability per page per tick
    access: dict[str, float]
    #: (area name, size_bytes, access_prob, offset_bytes, period_us, motion)
    hotspots: list[tuple[str, int, float, int, int, str]] = field(default_factory=list)


class Workload:
    """A workload spec running on real memory."""

    def __init__(
        self,
        spec: WorkloadSpec,
        *,
        tick_us: int | None = None,
        time_scale: float = 1.0,
        write: bool = False,
        thp: bool = False,
        seed: int | None = None,
    ) -> None:
        spec.validate()
        self.spec = spec
        self.tick_us = tick_us or spec.tick_us
        self.write = write
        self.rng = np.random.default_rng(seed)
        self.areas: dict[str, WorkloadArea] = {}
        for i, a in enumerate(spec.areas):
            self.areas[a.name] = WorkloadArea(a.name, a.size_bytes, i, thp)
        self._extra_index = len(spec.areas)
        self.phases: list[_Phase] = []
        t = 0
        for p in spec.phases:
            t += max(int(p.duration_us * time_scale), 1)
            self.phases.append(
                _Phase(
                    t,
                    dict(p.access),
                    [
                        (
                            h.area,
                            h.size_bytes,
                            h.access_prob,
                            h.offset_bytes,
                            int(h.period_us * time_scale),
                            h.motion,
                        )
                        for h in p.hotspots
                    ],
                )
            )
        self.cycle_us = t
        self.end_us = None if spec.end_us is None else int(spec.end_us * time_scale)
        self.paused = False
        self.nr_ticks = 0

    def populate(self) -> None:
        for area in self.areas.values():
            area.populate()

    def phase_at(self, elapsed_us: int) -> _Phase:
        if self.spec.repeat:
            elapsed_us %= self.cycle_us
        for p in self.phases:
            if elapsed_us < p.end_us:
                return p
        return self.phases[-1]

    def _touch(self, area: WorkloadArea, lo: int, hi: int, prob: float) -> None:
        if prob <= 0 or hi <= lo:
            return
        stride = max(int(1.0 / prob), 1)
        if self.rng.random() >= prob * stride:
            return
        area.touch(lo, hi, stride, int(self.rng.integers(stride)), self.write)

    def tick(self, elapsed_us: int) -> None:
        """Do one tick's accesses for the phase at ``elapsed_us``."""
        self.nr_ticks += 1
        phase = self.phase_at(elapsed_us)
        for name, prob in phase.access.items():
            area = self.areas.get(name)
            if area is not None and area.headers is not None:
                self._touch(area, 0, area.nr_pages, prob)
        for name, size, prob, offset, period_us, motion in phase.hotspots:
            area = self.areas.get(name)
            if area is None or area.headers is None:
                continue
            for lo, hi in _hotspot_pages(
                area.nr_pages, size, offset, period_us, motion, elapsed_us
            ):
                self._touch(area, lo, hi, prob)

    def verify(self) -> dict[str, Any]:
        bad = {name: a.verify() for name, a in self.areas.items() if a.headers is not None}
        checked = sum(a.nr_pages for a in self.areas.values() if a.headers is not None)
        return {"ok": not any(bad.values()), "bad_pages": bad, "checked_pages": checked}

    def map_area(self, name: str, size_bytes: int) -> WorkloadArea:
        if name in self.areas:
            raise WorkloadError(f"area {name!r} exists")
        if size_bytes < PAGE_SIZE or size_bytes % PAGE_SIZE:
            raise WorkloadError(f"size {size_bytes} must be a positive multiple of {PAGE_SIZE}")
        area = WorkloadArea(name, size_bytes, self._extra_index)
        self._extra_index += 1
        area.populate()
        self.areas[name] = area
        return area

    def unmap_area(self, name: str) -> WorkloadArea:
        area = self.areas.pop(name, None)
        if area is None:
            raise WorkloadError(f"no area {name!r}")
        area.unmap()
        return area

    def info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "ticks": self.nr_ticks,
            "time_s": time.monotonic(),
            "pattern": self.spec.name,
            "page_size": PAGE_SIZE,
            "tick_us": self.tick_us,
            "areas": [a.info() for a in sorted(self.areas.values(), key=lambda a: a.start)],
        }


def _hotspot_pages(
    nr_pages: int, size: int, offset: int, period_us: int, motion: str, t_us: int
) -> list[tuple[int, int]]:
    """Page ranges of a hot spot at ``t_us`` (the simulated workloads' motion)."""
    size_pages = max(min(size // PAGE_SIZE, nr_pages), 1)
    if motion == "bounce":
        span = nr_pages - size_pages
        pos = offset // PAGE_SIZE
        if period_us and span:
            frac = (t_us % period_us) / period_us
            pos = int(span * (2 * frac if frac < 0.5 else 2 - 2 * frac))
        pos = min(pos, span)
        return [(pos, pos + size_pages)]
    pos = offset // PAGE_SIZE
    if period_us:
        pos += int(nr_pages * ((t_us % period_us) / period_us))
    pos %= nr_pages
    hi = pos + size_pages
    if hi <= nr_pages:
        return [(pos, hi)]
    return [(pos, nr_pages), (0, hi - nr_pages)]


# -- command line -------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """``64M``, ``1G``, ``4096``, ``512K`` -> bytes (positive)."""
    try:
        value = units.parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pydamon.workload",
        description="Allocate memory areas and access them in a named pattern (real memory).",
    )
    p.add_argument(
        "pattern", help="hotcold, stairs, zigzag, phases, hotspot, or a .json/.yaml spec file"
    )
    p.add_argument("--size", type=parse_size, default=64 << 20, help="total bytes (default 64M)")
    p.add_argument("--tick-ms", type=float, help="access tick (default: the spec's, 5 ms)")
    p.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiply phase durations and hot spot periods by this",
    )
    p.add_argument("--duration", type=float, help="exit after this many seconds")
    p.add_argument("--write", action="store_true", help="accesses write (dirty) the pages")
    p.add_argument("--thp", action="store_true", help="madvise(MADV_HUGEPAGE) the areas")
    p.add_argument("--seed", type=int, help="random seed of the access pattern")
    p.add_argument("--info-file", help="also write the ready line (areas) to this file")
    p.add_argument("--verify-at-exit", action="store_true", help="verify data before exiting")
    p.add_argument("--no-stdin", action="store_true", help="do not read commands from stdin")
    return p


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if os.path.exists(args.pattern) or args.pattern.endswith((".json", ".yaml", ".yml")):
            spec = load_workload(args.pattern)
        else:
            spec = get_workload(args.pattern, args.size)
        workload = Workload(
            spec,
            tick_us=int(args.tick_ms * 1000) if args.tick_ms else None,
            time_scale=args.time_scale,
            write=args.write,
            thp=args.thp,
            seed=args.seed,
        )
    except (WorkloadError, OSError) as err:
        print(f"pydamon.workload: error: {err}", file=sys.stderr)
        return 2
    return _run(workload, args)


def _run(workload: Workload, args: argparse.Namespace) -> int:
    stop: list[int] = []
    verify_requested: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(0))
    signal.signal(signal.SIGINT, lambda *_: stop.append(0))
    signal.signal(signal.SIGUSR1, lambda *_: verify_requested.append(True))

    workload.populate()
    info = workload.info()
    if args.info_file:
        with open(args.info_file, "w") as f:
            json.dump(info, f)
    _emit("ready", **info)

    stdin_fd: int | None = None if args.no_stdin else sys.stdin.fileno()
    pending = b""
    started = time.monotonic()
    tick_s = workload.tick_us / 1e6
    next_tick = started
    while not stop:
        now = time.monotonic()
        elapsed_us = int((now - started) * 1e6)
        if args.duration is not None and now - started >= args.duration:
            break
        if workload.end_us is not None and elapsed_us >= workload.end_us:
            break
        if verify_requested:
            verify_requested.clear()
            _emit("verify", **workload.verify())
        if now >= next_tick:
            if not workload.paused:
                workload.tick(elapsed_us)
            next_tick = max(next_tick + tick_s, now)
            # Enter the kernel at least once per tick even when ticks overrun: under qemu's
            # emulation a CPU that never enters the kernel keeps stale TLB entries, and accesses
            # through them set no Accessed bit (invisible to page_idle and DAMON alike).
            os.sched_yield()
            continue
        timeout = next_tick - now
        if stdin_fd is None:
            time.sleep(timeout)
            continue
        try:
            ready, _, _ = select.select([stdin_fd], [], [], timeout)
        except InterruptedError:
            continue
        if not ready:
            continue
        chunk = os.read(stdin_fd, 4096)
        if not chunk:
            stdin_fd = None  # EOF: keep running without commands
            continue
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if _command(workload, line.decode().split(), stop):
                break
    if args.verify_at_exit:
        _emit("verify", **workload.verify())
    _emit("exit", ticks=workload.nr_ticks)
    return 0


def _command(workload: Workload, words: list[str], stop: list[int]) -> bool:
    """Run one stdin command; True if the program should exit."""
    if not words:
        return False
    cmd, rest = words[0], words[1:]
    try:
        if cmd == "verify":
            _emit("verify", **workload.verify())
        elif cmd == "info":
            _emit("info", **workload.info())
        elif cmd == "pause":
            workload.paused = True
            _emit("pause")
        elif cmd == "resume":
            workload.paused = False
            _emit("resume")
        elif cmd == "unmap" and len(rest) == 1:
            _emit("unmap", **workload.unmap_area(rest[0]).info())
        elif cmd == "map" and len(rest) == 2:
            area = workload.map_area(rest[0], parse_size(rest[1]))
            _emit("map", **area.info())
        elif cmd == "exit":
            stop.append(0)
            return True
        else:
            _emit("error", message=f"unknown command {' '.join(words)!r}")
    except (WorkloadError, argparse.ArgumentTypeError, OSError) as err:
        _emit("error", message=str(err))
    return False
