"""Achieved CPU against the CPU budget (``Context(cpu_budget=...)``, ``--cpu-budget``).

Host part (the only one so far): a stand-in operations set that burns a fixed amount of CPU per
region-sample (``--us-per-region-sample``, spun on the thread's CPU clock, so the cost is the
same however loaded the machine is; the default, 600 us, is what pydamon's vaddr paid per
region-sample on redis in the issue 13 guest), on the real clock, monitored with each budget of
``--budgets`` for ``--seconds``. Columns: the budget, the process's CPU share over the run's
second half (after the budget settled), the sampling interval and max_nr_regions the budget
chose, and the last aggregation's samples and mean access window (over its own interval).

    .venv/bin/python bench/cpu_budget.py
    .venv/bin/python bench/cpu_budget.py --budgets 0,5,20 --seconds 30 --us-per-region-sample 100
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from pydamon.core import Attrs, Context, Operations, Target, update_regions_access  # noqa: E402
from pydamon.core.regions import Regions  # noqa: E402


class BurnOps(Operations[object]):
    """Burns ``us`` of CPU per region at prepare and at check (half each)."""

    name = "burn"

    def __init__(self, us: float) -> None:
        self.half_s = us / 2e6

    def init(self, ctx: Context) -> None:
        for t in ctx.targets:
            t.regions = Regions([(0, 1 << 30)])
            t.regions.evenly_split(0, ctx.attrs.min_nr_regions, 4096)

    def _burn(self, ctx: Context) -> None:
        end = time.thread_time() + self.half_s * ctx.nr_regions
        while time.thread_time() < end:
            pass

    def prepare_access_checks(self, ctx: Context) -> None:
        self._burn(ctx)

    def check_accesses(self, ctx: Context) -> int:
        self._burn(ctx)
        nr = 0
        for t in ctx.targets:
            flags = np.zeros(len(t.regions), np.bool_)
            flags[::3] = True  # some regions accessed, so they do not all merge
            nr = max(nr, update_regions_access(ctx, t, flags))
        return nr


def run(budget: float, args: argparse.Namespace) -> dict[str, float]:
    attrs = Attrs(
        sample_interval_us=int(args.sample_ms * 1000),
        aggr_interval_us=int(args.aggr_ms * 1000),
        min_nr_regions=args.min_regions,
        max_nr_regions=args.max_regions,
        ops_update_interval_us=10**9,
    )
    ctx = Context(BurnOps(args.us_per_region_sample), [Target()], attrs, cpu_budget=budget)
    ctx.on_warning = lambda _msg: None
    last: list[tuple[int, int, int]] = []  # (samples, mean window, interval) per aggregation

    def note(c: Context) -> None:
        snap = c.snapshot()
        last.append((snap.nr_samples, snap.mean_window_us, snap.sample_interval_us))

    ctx.add_callback("after_aggregation", note)
    marks: list[tuple[float, float]] = []
    stop = threading.Event()

    def sampler() -> None:  # the process's CPU clock every 0.25 s of wall time
        while not stop.wait(0.25):
            marks.append((time.monotonic(), time.process_time()))

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    ctx.run(duration_us=int(args.seconds * 1e6))
    stop.set()
    thread.join()
    half = next(m for m in marks if m[0] >= marks[0][0] + args.seconds / 2)
    share = (marks[-1][1] - half[1]) / max(marks[-1][0] - half[0], 1e-9) * 100
    samples, window, interval = last[-1] if last else (0, 0, 1)
    return {
        "share": share,
        "sample_ms": ctx.attrs.sample_interval_us / 1000,
        "max_nr_regions": ctx.attrs.max_nr_regions,
        "nr_regions": ctx.nr_regions,
        "samples": samples,
        "window_ms": window / 1000,
        "window_ratio": window / interval,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budgets", default="0,5,10,20", help="per cent of one CPU (0: none)")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--us-per-region-sample", type=float, default=600.0)
    p.add_argument("--sample-ms", type=float, default=100.0)
    p.add_argument("--aggr-ms", type=float, default=2000.0)
    p.add_argument("--min-regions", type=int, default=10)
    p.add_argument("--max-regions", type=int, default=100)
    args = p.parse_args()
    print(
        f"stand-in: {args.us_per_region_sample:g} us CPU per region-sample; asked: sampling "
        f"{args.sample_ms:g} ms, aggregation {args.aggr_ms:g} ms, regions "
        f"[{args.min_regions}, {args.max_regions}]; {args.seconds:g} s per budget\n"
    )
    print("| budget % | achieved CPU % | sampling ms | max_nr_regions | regions | samples/aggr "
          "| last aggr's mean window / its interval |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for text in args.budgets.split(","):
        budget = float(text)
        r = run(budget, args)
        print(
            f"| {budget:g} | {r['share']:.1f} | {r['sample_ms']:.1f} | {r['max_nr_regions']} "
            f"| {r['nr_regions']} | {r['samples']} | {r['window_ms']:.1f} ms / "
            f"{r['window_ratio']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
