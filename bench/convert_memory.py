"""Peak memory and time of ``pydamon convert`` to damo's ``json_compressed`` (issue 12).

Builds synthetic records through the public :class:`pydamon.record.RecordWriter` (as ``pydamon
record`` streams them, then finalized), in /tmp: the full size is a 10-minute record at 100 ms
aggregation with ~1300 regions per snapshot (6000 snapshots, 7.7 M regions), plus 1/4 and 1/2
of it. Each is converted in a fresh subprocess (pydamon's ``main``, ``convert ... --output_type
json_compressed``); peak RSS is that process's ``VmHWM`` at its end (a forked child's
``ru_maxrss`` would count the parent's pages from before the exec), time its wall clock.

    python bench/convert_memory.py                  # 1/4, 1/2 and full size
    python bench/convert_memory.py --snapshots 1000 --sizes 1
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from pydamon.core.snapshot import Snapshot
from pydamon.record import Record, RecordWriter

PAGE = 4096


def build(path: str, nr_snapshots: int, nr_regions: int, seed: int = 1) -> int:
    """A record like one of a process: regions splitting a 4 GiB area, their boundaries and
    access counts moving each aggregation. Returns the number of regions in all."""
    rng = np.random.default_rng(seed)
    base = 0x7F0000000000
    pages = 1 << 20
    meta = {"ops": "sim", "targets": [{"index": 0, "target_id": 1, "pid": None, "name": "bench"}],
            "attrs": {"sample_interval_us": 5000, "aggr_interval_us": 100000,
                      "ops_update_interval_us": 1000000}}  # fmt: skip
    total = 0
    writer = RecordWriter(path, meta, holder="bench/convert_memory.py")
    for i in range(nr_snapshots):
        nr = int(nr_regions + rng.integers(-50, 51))
        cuts = np.sort(rng.choice(np.arange(1, pages), nr - 1, replace=False))
        starts = np.concatenate([[0], cuts]) * PAGE + base
        ends = np.concatenate([cuts, [pages]]) * PAGE + base
        snap = Snapshot(0, 1, i * 100_000, (i + 1) * 100_000, 5000, 100_000,
                        starts.astype(np.int64), ends.astype(np.int64),
                        rng.integers(0, 21, nr), rng.integers(0, 600, nr))  # fmt: skip
        writer.add(Record.from_snapshots([snap]))
        total += nr
    writer.close({"stop_reason": "bench"})
    return total


PEAK_RSS = (
    "import sys\nfrom pydamon.cli.main import main\nrc = main(sys.argv[1:])\n"
    "hwm = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
    "print('peak_kib', hwm, file=sys.stderr)\nsys.exit(rc)\n"
)


def convert(src: str, out: str) -> tuple[float, float, float, int]:
    """(wall s, CPU s, peak RSS MiB, exit code) of converting ``src`` in a fresh process."""
    cmd = [sys.executable, "-c", PEAK_RSS, "convert", src, "-o", out,
           "--output_type", "json_compressed"]  # fmt: skip
    t0 = time.monotonic()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    last = proc.stderr.strip().splitlines()[-1:] or [""]
    peak = float(last[0].split()[1]) / 1024 if last[0].startswith("peak_kib") else float("nan")
    return wall, cpu, peak, proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--snapshots", type=int, default=6000, help="snapshots of the full size")
    ap.add_argument("--regions", type=int, default=1283, help="mean regions per snapshot")
    ap.add_argument("--sizes", default="0.25,0.5,1", help="fractions of the full size")
    ap.add_argument("--dir", default=tempfile.gettempdir())
    args = ap.parse_args()
    print("| record | snapshots | regions | record MiB | json_compressed MiB | wall s | CPU s "
          "| CPU s per M regions | peak RSS MiB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for frac in (float(x) for x in args.sizes.split(",")):
        n = max(1, int(args.snapshots * frac))
        src = os.path.join(args.dir, f"convert-bench-{n}.data")
        out = os.path.join(args.dir, f"convert-bench-{n}.json.z")
        try:
            regions = build(src, n, args.regions)
            wall, cpu, rss, rc = convert(src, out)
            if rc:
                print(f"convert of {n} snapshots failed (exit {rc})", file=sys.stderr)
                return 1
            print(f"| {frac:g} | {n} | {regions / 1e6:.2f} M | {os.path.getsize(src) / 2**20:.0f} "
                  f"| {os.path.getsize(out) / 2**20:.0f} | {wall:.1f} | {cpu:.1f} "
                  f"| {cpu / (regions / 1e6):.2f} | {rss:.0f} |", flush=True)  # fmt: skip
        finally:
            for p in (src, out, src + ".old"):
                if os.path.exists(p):
                    os.unlink(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
