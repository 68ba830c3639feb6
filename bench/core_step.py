"""Per-sample cost of the DAMON core loop (``Context._step``) with a trivial operations set.

No real access check: a region counts as accessed when bit 12 of its random sampling address is
set, so what is measured is the core's own work (sampling addresses, moving sums, merge/split at
aggregation, call/scheme hooks). Run: ``python bench/core_step.py [--profile N]``.

Figures are the loop thread's CPU time per sample, best of 3 runs.

Two modes per region count N:
- ``steady``: min_nr_regions = max_nr_regions = N over equal regions; nothing merges or splits,
  so aggregations cost one merge pass and a reset;
- ``adaptive``: min_nr_regions 10, max_nr_regions N; regions merge and split every aggregation.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np

from pydamon.core import PAGE_SIZE, Attrs, Context, Target, VirtualClock
from pydamon.core.operations import Operations, update_regions_access


class BitOps(Operations):
    name = "bench"

    def default_clock(self):
        return VirtualClock()

    def init(self, ctx):
        for t in ctx.targets:
            if not len(t.regions):
                t.regions.set_regions(t.ranges)
                t.regions.evenly_split(0, ctx.attrs.min_nr_regions)

    def prepare_access_checks(self, ctx):
        for t in ctx.targets:
            t.regions.pick_sampling_addrs(ctx.rng)

    def check_accesses(self, ctx):
        max_nr = 0
        for t in ctx.targets:
            accessed = (t.regions.sampling_addr & 0x1000) != 0
            max_nr = max(max_nr, update_regions_access(ctx, t, accessed))
        return max_nr


def make_ctx(n: int, mode: str) -> Context:
    size = n * 256 * PAGE_SIZE
    if mode == "steady":
        attrs = Attrs(min_nr_regions=n, max_nr_regions=n)
    else:
        attrs = Attrs(min_nr_regions=10, max_nr_regions=n)
    return Context(BitOps(), [Target(ranges=[(1 << 32, (1 << 32) + size)])], attrs, seed=1)


def measure(n: int, mode: str, nr_samples: int, repeats: int = 3) -> tuple[float, float]:
    ctx = make_ctx(n, mode)
    ctx.run(nr_aggregations=3)  # warm up, reach a steady region count
    regions_seen = []
    ctx.add_callback("after_aggregation", lambda c: regions_seen.append(c.nr_regions))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.thread_time()  # CPU time of this thread: robust to other load on the machine
        ctx.run(duration_us=nr_samples * ctx.attrs.sample_interval_us)
        elapsed = time.thread_time() - t0
        # each run() restarts the loop: passed_sample_intervals counts this run's samples
        best = min(best, elapsed / ctx.passed_sample_intervals)
    mean_regions = float(np.mean(regions_seen)) if regions_seen else float(ctx.nr_regions)
    return best * 1e6, mean_regions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--profile", type=int, default=0, help="cProfile N regions (steady)")
    args = parser.parse_args()
    if args.profile:
        ctx = make_ctx(args.profile, "steady")
        ctx.run(nr_aggregations=3)
        prof = cProfile.Profile()
        prof.enable()
        ctx.run(duration_us=args.samples * ctx.attrs.sample_interval_us)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)
        return
    print(f"{'mode':<9} {'regions':>8} {'us/sample':>10} {'us/region-sample':>17}")
    for mode in ("steady", "adaptive"):
        for n in (10, 100, 1000):
            us, regions = measure(n, mode, args.samples)
            print(f"{mode:<9} {regions:>8.0f} {us:>10.1f} {us / regions:>17.3f}")


if __name__ == "__main__":
    main()
