"""Time to load and render heatmap and wss for long records; record file size per hour.

Synthetic records at 100 ms aggregation with 1000 regions per snapshot (three spans like a
process: heap, mmap area, stack; random region boundaries every snapshot as DAMON's
split/merge produce; a hot band moving through the heap) are generated for 1 minute, 1 hour
and 8 hours as a recorder streams them (version 1 blocks), then finalized as ``pydamon record``
does: uncompressed into whole-record columns (format version 2, ``columns``), or with zlib-6
into big blocks (version 1, ``zlib``); ``--layouts blocks`` also measures uncompressed version 1
blocks (the layout before version 2).

Every measurement runs in a fresh process (``--repeat`` times; the table shows best/median):

- load: ``read_record`` (version 2: maps the file; version 1: decodes every block),
- heatmap: the 80x30 terminal grid from the whole record (spans found first),
- png: a 500x300 grid and its PNG via matplotlib (first repeat only),
- wss: working set size of every snapshot + percentiles,
- peak RSS: the child's peak resident set after load + heatmap (``VmHWM``; for a mapped
  record this counts the file pages it touched, which the kernel can drop at any time).

Times are CPU seconds of the child (``time.process_time``): the machines this runs on are
shared, and wall time there measures the neighbours. Version 1 records too big to decode whole
(the 8 h ones: 288 M regions) are read block by block (``RecordReader.blocks()``) into the same
accumulators (``HeatGrid``, per-snapshot wss); the table says which way each row was measured.
damo's json_compressed size is extrapolated from one minute of the same data.

Usage: python bench/report_speed.py [--durations 60,3600,28800] [--regions 1000] [--dir DIR]
       [--layouts columns,zlib,blocks] [--repeat 3] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from pydamon.record import Record, RecordReader, read_record
from pydamon.record.binfmt import (
    FINAL_BLOCK_SNAPSHOTS,
    TAG_BLOCK,
    TAG_END,
    chunk_bytes,
    finalize_file,
    header_bytes,
)
from pydamon.record.blocks import encode_block
from pydamon.record.damo import write_damo_record
from pydamon.report.heatmap import HeatGrid, heatmap
from pydamon.report.percentiles import percentiles_of
from pydamon.report.wss import wss_bytes

AGGR_US = 100_000
SAMPLE_US = 5_000
HEAP = (0x555555554000, 0x555555554000 + (1 << 30))
MMAP = (0x7F0000000000, 0x7F0000000000 + (10 << 30))
STACK = (0x7FFFFF000000, 0x7FFFFF000000 + (8 << 20))


def synthetic_block(first: int, n: int, nr_regions: int, rng: np.random.Generator) -> Record:
    """``n`` snapshots starting at snapshot index ``first``."""
    per_span = [nr_regions // 2, nr_regions - nr_regions // 2 - 2, 2]
    starts_l, ends_l = [], []
    for (lo, hi), k in zip((HEAP, MMAP, STACK), per_span):
        pages = (hi - lo) // 4096
        cuts = np.sort(rng.integers(1, pages, size=(n, k - 1)), axis=1)
        cuts = np.maximum.accumulate(cuts + np.arange(k - 1), axis=1)  # distinct, increasing
        cuts = np.minimum(cuts, pages - (k - 1) + np.arange(k - 1))
        s = np.concatenate([np.zeros((n, 1), np.int64), cuts], axis=1) * 4096 + lo
        e = np.concatenate([cuts, np.full((n, 1), pages)], axis=1) * 4096 + lo
        starts_l.append(s)
        ends_l.append(e)
    starts = np.concatenate(starts_l, axis=1).reshape(-1)
    ends = np.concatenate(ends_l, axis=1).reshape(-1)
    snap_idx = np.repeat(np.arange(first, first + n), nr_regions)
    # a hot band of 128 MiB moving through the heap over 10 minutes; everything else cool
    band = HEAP[0] + ((snap_idx % 6000) * ((HEAP[1] - HEAP[0]) // 6000))
    hot = (starts < band + (128 << 20)) & (ends > band)
    nr = np.where(hot, 18, rng.integers(0, 3, starts.size))
    age = rng.integers(0, 3000, starts.size)
    offsets = np.arange(n + 1, dtype=np.int64) * nr_regions
    t = np.arange(first, first + n, dtype=np.int64) * AGGR_US
    unknown = np.full(n, -1, np.int64)
    return Record(
        meta={},
        targets=[],
        snap_target=np.zeros(n, np.int32),
        snap_start_us=t,
        snap_end_us=t + AGGR_US,
        snap_sample_us=np.full(n, SAMPLE_US, np.int64),
        snap_aggr_us=np.full(n, AGGR_US, np.int64),
        rss_bytes=np.full(n, 300 << 20, np.int64),
        vsz_bytes=np.full(n, 12 << 30, np.int64),
        sys_free_bytes=unknown,
        sys_total_bytes=unknown,
        region_offsets=offsets,
        starts=starts,
        ends=ends,
        nr_accesses=nr,
        age=age,
    )


def generate(path: str, nr_snapshots: int, nr_regions: int, compress: int) -> None:
    """Blocks of ``FINAL_BLOCK_SNAPSHOTS`` snapshots (version 1), as before finalization."""
    rng = np.random.default_rng(42)
    meta = {"targets": [{"index": 0, "pid": 1, "name": "synthetic"}], "ops": "vaddr"}
    with open(path, "wb") as f:
        f.write(header_bytes(meta))
        for first in range(0, nr_snapshots, FINAL_BLOCK_SNAPSHOTS):
            n = min(FINAL_BLOCK_SNAPSHOTS, nr_snapshots - first)
            part = synthetic_block(first, n, nr_regions, rng)
            f.write(chunk_bytes(TAG_BLOCK, encode_block(part, compress)))
        f.write(chunk_bytes(TAG_END, b'{"nr_snapshots": %d}' % nr_snapshots))


def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Result and CPU seconds of this process (steadier than wall time on a shared machine)."""
    t = time.process_time()
    out = fn(*args, **kwargs)
    return out, time.process_time() - t


def peak_rss_mib() -> float:
    """This process's peak RSS (``VmHWM``: unlike ``ru_maxrss``, not inherited from the parent
    that forked it)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_whole(path: str, png: bool) -> dict[str, float]:
    t_wall = time.perf_counter()
    rec, t_load = timed(read_record, path)
    wall_load = time.perf_counter() - t_wall
    _, t_grid = timed(heatmap, rec, time_bins=30, address_bins=80)
    rss = peak_rss_mib()
    t_png = float("nan")
    if png:
        from pydamon.report.render import heatmap_image

        def render_png() -> None:
            heatmap_image(heatmap(rec, time_bins=300, address_bins=500), path + ".png")

        _, t_png = timed(render_png)

    def wss() -> list[tuple[int, int]]:
        return percentiles_of(wss_bytes(rec))

    _, t_wss = timed(wss)
    return {"load": t_load, "wall_load": wall_load, "heatmap": t_grid, "png": t_png,
            "wss": t_wss, "rss": rss, "mode": 0}  # fmt: skip


def bench_streamed(path: str, nr_snapshots: int) -> dict[str, float]:
    """Block by block: load+heatmap+wss in one pass (time range and spans known up front)."""
    grid = HeatGrid((0, nr_snapshots * AGGR_US), [HEAP, MMAP, STACK], 30, 80)
    wss_parts = []
    t_decode = t_grid = t_wss = 0.0
    t_wall = time.perf_counter()
    blocks = RecordReader(path).blocks()
    while True:
        part, dt = timed(next, blocks, None)
        t_decode += dt
        if part is None:
            break
        _, dt = timed(grid.add, part)
        t_grid += dt
        w, dt = timed(wss_bytes, part)
        t_wss += dt
        wss_parts.append(w)
    grid.result()
    percentiles_of(np.concatenate(wss_parts))
    return {"load": t_decode, "wall_load": time.perf_counter() - t_wall, "heatmap": t_grid,
            "png": float("nan"), "wss": t_wss, "rss": peak_rss_mib(), "mode": 1}  # fmt: skip


def measure_child(path: str, nr_snapshots: int, streamed: bool, png: bool) -> dict[str, float]:
    """Run one measurement in a fresh interpreter (what a user's ``pydamon report`` pays)."""
    cmd = [sys.executable, __file__, "--measure", path, "--snapshots", str(nr_snapshots)]
    cmd += ["--streamed"] if streamed else []
    cmd += ["--png"] if png else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def best_median(values: list[float], fmt: str = "{:.3f}") -> str:
    vals = sorted(v for v in values if v == v)
    if not vals:
        return "-"
    return f"{fmt.format(vals[0])}/{fmt.format(statistics.median(vals))}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--durations", default="60,3600,28800", help="seconds, comma separated")
    ap.add_argument("--regions", type=int, default=1000)
    ap.add_argument("--dir", default=None, help="where to write the records (default: a tmp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated records")
    ap.add_argument("--layouts", default="columns,zlib",
                    help="columns (v2), zlib (v1 compressed), blocks (v1 raw)")  # fmt: skip
    ap.add_argument("--repeat", type=int, default=3, help="fresh-process runs per record")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--snapshots", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--streamed", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--png", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        if args.streamed:
            r = bench_streamed(args.measure, args.snapshots)
        else:
            r = bench_whole(args.measure, args.png)
        print(json.dumps(r))
        return 0
    base = args.dir or tempfile.mkdtemp(prefix="pydamon-bench-")
    durations = [int(x) for x in args.durations.split(",")]
    layouts = args.layouts.split(",")
    print(f"# {args.regions} regions/snapshot, {AGGR_US // 1000} ms aggregation; "
          f"python {sys.version.split()[0]}, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs; CPU s best/median of {args.repeat} fresh processes")  # fmt: skip
    # damo json_compressed size from one minute of the same data
    one_min = synthetic_block(0, 600, args.regions, np.random.default_rng(42))
    one_min.targets = []
    damo_path = os.path.join(base, "damo.json_compressed")
    _, t_damo = timed(write_damo_record, one_min, damo_path, footprints=False)
    damo_per_hour = os.path.getsize(damo_path) * 60
    os.unlink(damo_path)
    header = (f"{'record':>6} {'snapshots':>9} {'regions':>11} {'layout':>7} {'MiB':>7} "
              f"{'MiB/hour':>8} {'write s':>7} {'load s':>11} {'heatmap s':>11} {'png s':>6} "
              f"{'wss s':>11} {'RSS MiB':>9} {'how':>8}")  # fmt: skip
    print(header)
    for seconds in durations:
        n = seconds * 1_000_000 // AGGR_US
        for layout in layouts:
            compress = 6 if layout == "zlib" else 0
            path = os.path.join(base, f"r{seconds}-{layout}.data")
            _, t_gen = timed(generate, path, n, args.regions, compress)
            if layout != "blocks":
                _, t_fin = timed(finalize_file, path, {}, compress=compress)
                t_gen += t_fin
            size = os.path.getsize(path)
            streamed = layout != "columns" and n * args.regions > 40_000_000
            runs = [measure_child(path, n, streamed, png=(i == 0 and not streamed))
                    for i in range(args.repeat)]  # fmt: skip
            label = f"{seconds // 3600} h" if seconds >= 3600 else f"{seconds // 60} min"

            def col(key: str, runs: list[dict[str, float]] = runs) -> str:
                return best_median([r[key] for r in runs])

            print(f"{label:>6} {n:>9} {n * args.regions:>11} {layout:>7} {size / 2**20:>7.1f} "
                  f"{size / 2**20 * 3600 / seconds:>8.1f} {t_gen:>7.2f} {col('load'):>11} "
                  f"{col('heatmap'):>11} {runs[0]['png']:>6.2f} {col('wss'):>11} "
                  f"{best_median([r['rss'] for r in runs], '{:.0f}'):>9} "
                  f"{'streamed' if streamed else 'whole':>8}", flush=True)  # fmt: skip
            if not args.keep:
                os.unlink(path)
                if os.path.exists(path + ".png"):
                    os.unlink(path + ".png")
    print(f"# damo json_compressed of the same data: {damo_per_hour / 2**20:.1f} MiB/hour "
          f"(written in {t_damo * 60:.0f} s per hour of data)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
