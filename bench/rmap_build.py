"""Cost of paddr pageout's reverse map (page frame -> pid, vaddr) against mapped memory.

For each size, a child process maps and touches that much anonymous memory; the script then
times building the map of the whole system (:func:`pydamon.ops._rmap.build_reverse_map`, what
the paddr operations set does at most once per ops-update interval), the map of the child alone,
and resolving the child's frames back into per-process address runs (lookup + coalesce, the
per-region work of an apply). Needs root (pagemap frame numbers); runs on the host (it only
reads /proc).

    python bench/rmap_build.py [--sizes 256M,1G,4G] [--repeat 3]
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

CHILD = """
import mmap, json, sys, numpy as np
m = mmap.mmap(-1, int(sys.argv[1]), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
v = np.frombuffer(m, np.uint8)
v[::4096] = 1
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
        "build child (s) | map MiB | lookup+coalesce child (ms) | runs |"
    )
    print(header)
    print("|---" * 9 + "|")
    for text in args.sizes.split(","):
        size = parse_size(text)
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(size)],
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
                sl = m.lookup(lo << 12, hi << 12)
                runs, _ = _rmap.coalesce(m.pids[sl], m.vaddrs[sl], m.pfns[sl])
                return len(runs)

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
