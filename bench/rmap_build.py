"""Cost of paddr pageout's reverse map (page frame -> pid, vaddr) against mapped memory.

For each size, a child process maps and touches that much anonymous memory; the script then
times building the map of the whole system (:func:`pydamon.ops._rmap.build_reverse_map`, what
the paddr operations set does at most once per ops-update interval), the map of the child alone,
and resolving the physical span of the child's frames, in 64 MiB regions, into per-process
address ranges (lookup, grouping by process, pagemap re-check: an apply's per-region work
before process_madvise).
Needs root (pagemap frame numbers); only reads /proc.

    python bench/rmap_build.py [--sizes 256M,1G,4G] [--repeat 3] [--scatter]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from pydamon.ops import _rmap

#: physical region size of the resolve timing (pages)
REGION_PAGES = (64 << 20) >> 12

CHILD = """
import mmap, json, sys, numpy as np
m = mmap.mmap(-1, int(sys.argv[1]), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
v = np.frombuffer(m, np.uint8)
pages = np.arange(len(m) // 4096) * 4096
if sys.argv[2] == "scatter":
    np.random.default_rng(1).shuffle(pages)  # fault in random order: frames out of address order
v[pages] = 1
print(json.dumps([int(v.ctypes.data), len(m)]), flush=True)
sys.stdin.read()
"""


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].isalpha() else int(text)


def median_time(fn: object, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        result = fn()  # type: ignore[operator]
        times.append(time.perf_counter() - began)
    return statistics.median(times), result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256M,1G,4G")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--scatter",
        action="store_true",
        help="the child touches its pages in random order (a physical range then holds pages "
        "scattered over its address space, the worst case for merging into ranges)",
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root: pagemap shows frame numbers to root only", file=sys.stderr)
        return 2
    print(
        f"# {platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
        f"kernel {platform.release()}, python {platform.python_version()}, "
        f"median of {args.repeat}"
    )
    header = (
        "| child mapped | system pages in map | procs | build all (s) | GiB/s | "
        "build child (s) | map MiB | resolve child's frames, 64 MiB regions (ms) | ranges |"
    )
    print(header)
    print("|---" * 9 + "|")
    for text in args.sizes.split(","):
        size = parse_size(text)
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(size), "scatter" if args.scatter else "in-order"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            addr, length = json.loads(child.stdout.readline())
            t_all, rmap_all = median_time(_rmap.build_reverse_map, args.repeat)
            t_child, rmap = median_time(
                lambda pid=child.pid: _rmap.build_reverse_map([pid], exclude=()), args.repeat
            )
            assert isinstance(rmap_all, _rmap.ReverseMap) and isinstance(rmap, _rmap.ReverseMap)
            mine = (rmap.vaddrs >= addr) & (rmap.vaddrs < addr + length)
            lo, hi = int(rmap.pfns[mine].min()), int(rmap.pfns[mine].max()) + 1

            def resolve(m: _rmap.ReverseMap = rmap, lo: int = lo, hi: int = hi) -> int:
                # an apply's work before process_madvise, over 64 MiB regions covering the
                # child's frames: lookup, grouping by process, pagemap re-check
                nr_ranges = 0
                for region in range(lo, hi, REGION_PAGES):
                    sl = m.lookup(region << 12, (region + REGION_PAGES) << 12)
                    for pid, vaddrs, pfns in _rmap.group_by_pid(
                        m.pids[sl], m.vaddrs[sl], m.pfns[sl]
                    ):
                        fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
                        try:
                            nr_ranges += len(_rmap.verified_ranges(fd, vaddrs, pfns))
                        finally:
                            os.close(fd)
                return nr_ranges

            t_resolve, nr_runs = median_time(resolve, args.repeat)
            gib = len(rmap_all) * 4096 / 2**30
            print(
                f"| {text} | {len(rmap_all)} ({gib:.2f} GiB) | {rmap_all.nr_processes} | "
                f"{t_all:.3f} | {gib / t_all:.2f} | {t_child:.3f} | "
                f"{rmap_all.nbytes / 2**20:.1f} | {t_resolve * 1e3:.1f} | {nr_runs} |"
            )
            del rmap_all, rmap, mine
        finally:
            child.kill()
            child.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
