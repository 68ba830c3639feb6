"""Overhead of pydamon's monitoring loop: engine cost per region per sample, CPU per simulated
hour, and per-sample cost against simulated memory size.

Run: ``python bench/core_overhead.py [--hours 1] [--samples 4000] [--quick]``

Three tables, all CPU time of the monitoring loop's thread (``Context.monitor_cpu_s``), best of
``--repeat`` runs, on virtual time:

1. **Engine**: a trivial operations set whose access check is a bit test of the sampling address
   (near free), with ``min_nr_regions = max_nr_regions = N`` over equal regions so the region
   count stays N. Measures the core's own per-sample work (sampling addresses, access-rate
   update, merge pass and reset at each aggregation).
2. **Simulated hour**: the ``sim`` operations set running ``hotcold`` (1 GiB) with default
   attributes (5 ms sampling, 100 ms aggregation, 10..1000 regions) for ``--hours`` of virtual
   time: CPU seconds per simulated hour, and what that is as a share of one CPU if the loop ran
   in real time with access checks as cheap as the simulation's.
3. **Memory size**: ``sim`` per-sample cost with 1 GiB and 64 GiB (and 4 TiB) of simulated
   memory, with default attributes and with the region count fixed at 100; it must not grow
   with the size.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from pydamon.core import PAGE_SIZE, Attrs, Context, Target, VirtualClock
from pydamon.core.operations import Operations, update_regions_access
from pydamon.ops.sim import SimOperations, get_workload

GiB = 1 << 30


class BitTestOps(Operations):
    """Access check = bit 12 of the sampling address: the engine's work dominates."""

    name = "bench-trivial"

    def default_clock(self) -> VirtualClock:
        return VirtualClock()

    def init(self, ctx: Context) -> None:
        for t in ctx.targets:
            if not len(t.regions):
                t.regions.set_regions(t.ranges or [])
                t.regions.evenly_split(0, ctx.attrs.min_nr_regions)

    def prepare_access_checks(self, ctx: Context) -> None:
        for t in ctx.targets:
            t.regions.pick_sampling_addrs(ctx.rng)

    def check_accesses(self, ctx: Context) -> int:
        max_nr = 0
        for t in ctx.targets:
            accessed = (t.regions.sampling_addr & 0x1000) != 0
            max_nr = max(max_nr, update_regions_access(ctx, t, accessed))
        return max_nr


def best_of(repeat: int, fn) -> tuple[float, Context]:
    best: tuple[float, Context] | None = None
    for _ in range(repeat):
        ctx = fn()
        if best is None or ctx.monitor_cpu_s < best[0]:
            best = (ctx.monitor_cpu_s, ctx)
    assert best is not None
    return best


def engine_run(n: int, samples: int) -> Context:
    size = n * 256 * PAGE_SIZE
    attrs = Attrs(min_nr_regions=n, max_nr_regions=n)
    ctx = Context(BitTestOps(), [Target(ranges=[(1 << 32, (1 << 32) + size)])], attrs, seed=1)
    ctx.run(duration_us=samples * attrs.sample_interval_us)
    assert ctx.nr_regions == n, ctx.nr_regions
    return ctx


def sim_run(total_bytes: int, duration_us: int, attrs: Attrs | None = None) -> Context:
    ops = SimOperations(get_workload("hotcold", total_bytes), seed=1)
    ctx = Context(ops, [Target()], attrs or Attrs(), seed=1)
    nr_regions: list[int] = []
    ctx.add_callback("after_aggregation", lambda c: nr_regions.append(c.nr_regions))
    ctx.run(duration_us=duration_us)
    ctx.bench_nr_regions = nr_regions  # type: ignore[attr-defined]
    return ctx


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mean(values: list[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=1.0, help="simulated hours for table 2")
    ap.add_argument("--samples", type=int, default=4000, help="samples per run, tables 1 and 3")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    ap.add_argument("--quick", action="store_true", help="fewer samples, 0.05 h, 1 repeat")
    ap.add_argument("--tables", default="123", help="which tables to run, e.g. 13 (default: 123)")
    args = ap.parse_args()
    if args.quick:
        args.hours, args.samples, args.repeat = 0.05, 1000, 1

    print(f"# machine: {os.cpu_count()} CPUs ({cpu_model()}), Python {platform.python_version()}")
    print("# all figures: CPU time of the monitoring loop's thread on virtual time")
    print()

    if "1" in args.tables:
        engine_table(args)
    if "2" in args.tables:
        hour_table(args)
    if "3" in args.tables:
        size_table(args)


def engine_table(args: argparse.Namespace) -> None:
    print("## 1. engine cost (trivial access check), regions fixed at N")
    print(f"{'regions':>8} {'samples':>8} {'us/sample':>10} {'ns/region/sample':>17}")
    for n in (10, 100, 1000):
        cpu, _ = best_of(args.repeat, lambda n=n: engine_run(n, args.samples))
        per_sample = cpu / args.samples
        print(f"{n:>8} {args.samples:>8} {per_sample * 1e6:>10.1f} {per_sample / n * 1e9:>17.1f}")
    print()


def hour_table(args: argparse.Namespace) -> None:
    print("## 2. monitoring loop overhead, sim 'hotcold' 1 GiB, default attrs (5 ms / 100 ms)")
    duration_us = int(args.hours * 3600e6)
    t0 = time.perf_counter()
    ctx = sim_run(GiB, duration_us)
    wall = time.perf_counter() - t0
    samples = ctx.passed_sample_intervals
    per_hour = ctx.monitor_cpu_s / args.hours
    regions = ctx.bench_nr_regions  # type: ignore[attr-defined]
    print(
        f"{'simulated':>10} {'samples':>8} {'regions(mean)':>14} {'CPU s':>8} "
        f"{'CPU s/sim-hour':>15} {'% of 1 CPU':>11} {'wall s':>7}"
    )
    print(
        f"{args.hours:>9g}h {samples:>8} {mean(regions):>14.0f} {ctx.monitor_cpu_s:>8.1f} "
        f"{per_hour:>15.1f} {per_hour / 3600 * 100:>10.2f}% {wall:>7.1f}"
    )
    print()


def size_table(args: argparse.Namespace) -> None:
    print("## 3. per-sample cost vs simulated memory size, sim 'hotcold'")
    print("# 'default': 10..1000 regions (adaptive); 'fixed': min = max = 100 regions")
    print(
        f"{'memory':>8} {'attrs':>8} {'samples':>8} {'regions(mean)':>14} {'us/sample':>10} "
        f"{'us/region':>10}"
    )
    for attrs_name, attrs in (
        ("default", Attrs()),
        ("fixed", Attrs(min_nr_regions=100, max_nr_regions=100)),
    ):
        for total in (GiB, 64 * GiB, 4096 * GiB):
            cpu, c = best_of(
                args.repeat,
                lambda total=total, attrs=attrs: sim_run(total, args.samples * 5000, attrs),
            )
            per_sample = cpu / c.passed_sample_intervals
            nr = mean(c.bench_nr_regions)  # type: ignore[attr-defined]
            label = f"{total // GiB} GiB"
            print(
                f"{label:>8} {attrs_name:>8} {c.passed_sample_intervals:>8} {nr:>14.0f} "
                f"{per_sample * 1e6:>10.1f} {per_sample / max(nr, 1) * 1e6:>10.2f}"
            )


if __name__ == "__main__":
    main()
