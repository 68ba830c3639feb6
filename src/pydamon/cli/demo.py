"""``pydamon demo``: monitor a workload and show what DAMON sees, beside the ground truth.

The workload runs in the simulated address space (:mod:`pydamon.ops.sim`) on virtual time, so a
run of tens of seconds takes a second or two and the true access pattern is known exactly. The
output is the measured access heatmap next to the true one, the working set size over time
(measured and true), and accuracy figures.

:func:`run` is split into "monitor" (produces snapshots, and ground truth when there is one) and
"show" steps, so a real-memory mode can supply its own monitor step.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from pydamon import units
from pydamon.cli.common import time_us
from pydamon.cli.main import EXIT_USAGE, CliError
from pydamon.core import Attrs, AttrsError, Context, Snapshot, Target
from pydamon.ops.sim import (
    WORKLOADS,
    Accuracy,
    SimOperations,
    WorkloadError,
    get_workload,
    load_workload,
)
from pydamon.record import Record
from pydamon.report.heatmap import Heatmap, heatmap
from pydamon.report.percentiles import percentiles_of
from pydamon.report.render import heatmap_lines
from pydamon.report.wss import wss_bytes
from pydamon.units import format_bytes

#: Default simulated duration per named workload (one full cycle of its pattern), seconds.
DEFAULT_DURATION_S = {"hotcold": 10.0, "stairs": 16.0, "zigzag": 16.0, "phases": 20.0}
DEFAULT_WORKLOAD = "stairs"
HOT_THRESHOLD = 0.5


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="monitor a simulated workload and show what DAMON sees beside the ground truth",
        description="Run a workload in pydamon's simulated address space under DAMON-style "
        "monitoring and print the measured access heatmap and working set size next to the "
        "ground truth. Runs on virtual time: a few seconds of CPU for tens of simulated seconds.",
    )
    p.add_argument(
        "--workload",
        default=DEFAULT_WORKLOAD,
        help=f"named workload ({', '.join(WORKLOADS)}) or a .json/.yaml workload spec "
        f"(default: {DEFAULT_WORKLOAD})",
    )
    p.add_argument("--duration", type=float, help="simulated seconds (default: one cycle)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    p.add_argument(
        "--size",
        help="memory of a named workload (default: 1G simulated, 64M real)",
    )
    p.add_argument(
        "--mode",
        choices=("auto", "real", "sim"),
        default="auto",
        help="real: the workload program on real memory through vaddr (needs page_idle and "
        "root); sim: the simulated address space; auto (default): real where possible",
    )
    p.add_argument("--sample-us", type=time_us, default=5000, help="sampling interval (us)")
    p.add_argument("--aggr-us", type=time_us, default=100_000, help="aggregation interval (us)")
    p.add_argument("--min-nr-regions", type=int, default=10)
    p.add_argument("--max-nr-regions", type=int, default=1000)
    p.add_argument("--rows", type=int, default=16, help="heatmap time rows (default: 16)")
    p.add_argument("--cols", type=int, default=30, help="heatmap columns each (default: 30)")
    p.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the heatmaps (default: when printing to a terminal)",
    )
    p.set_defaults(func=run)


@dataclass
class DemoRun:
    """What a monitoring run produced, for :func:`show`."""

    source: str  # one line saying what was monitored
    snapshots: list[Snapshot]
    #: Ground truth per snapshot (same windows), when the address space is simulated.
    truth: list[Snapshot] | None = None
    accuracy: list[Accuracy] = field(default_factory=list)
    nr_regions: list[int] = field(default_factory=list)
    duration_us: int = 0
    monitor_cpu_s: float = 0.0
    attrs: Attrs = field(default_factory=Attrs)


def parse_size(text: str) -> int:
    try:
        return units.parse_size(text)
    except ValueError as err:
        raise CliError(f"bad size: {units.explain(text, err)}", EXIT_USAGE) from None


def attrs_from_args(args: argparse.Namespace) -> Attrs:
    """The demo's monitoring attributes from its options, or a one-line usage error."""
    if args.sample_us <= 0 or args.aggr_us <= 0:
        raise CliError("--sample-us and --aggr-us must be positive", EXIT_USAGE)
    try:
        attrs = Attrs(
            sample_interval_us=args.sample_us,
            aggr_interval_us=args.aggr_us,
            min_nr_regions=args.min_nr_regions,
            max_nr_regions=args.max_nr_regions,
        )
        attrs.validate()
    except AttrsError as err:
        raise CliError(f"bad monitoring attributes: {err}", EXIT_USAGE) from None
    return attrs


def monitor_for(ctx: Context, duration_us: int) -> tuple[list[Snapshot], list[int]]:
    """Run ``ctx`` (one target) for ``duration_us``; its snapshot and number of regions at
    each aggregation."""
    snaps = [got[0] for got in ctx.aggregations(duration_us=duration_us)]
    return snaps, [s.nr_regions for s in snaps]


def monitor_sim(args: argparse.Namespace) -> DemoRun:
    """Run the workload in the simulated address space; collect snapshots and ground truth."""
    try:
        if os.path.splitext(args.workload)[1] in (".json", ".yaml", ".yml"):
            spec = load_workload(args.workload)
        else:
            spec = get_workload(args.workload, parse_size(args.size or "1G"))
    except WorkloadError as err:
        raise CliError(str(err), EXIT_USAGE) from None
    duration_s = args.duration
    if duration_s is None:
        duration_s = DEFAULT_DURATION_S.get(spec.name, 20.0)
    if not 0 < duration_s <= 24 * 3600:
        raise CliError(f"--duration {duration_s} must be within (0, 86400] seconds", EXIT_USAGE)
    attrs = attrs_from_args(args)
    if duration_s * 1e6 / attrs.sample_interval_us > 2_000_000:
        raise CliError("too many samples for a demo; shorten --duration or grow --sample-us")

    ops = SimOperations(spec, seed=args.seed)
    ctx = Context(ops, [Target()], attrs, seed=args.seed)
    duration_us = int(duration_s * 1e6)
    snaps, nr_regions = monitor_for(ctx, duration_us)
    space = ops.space(0)
    return DemoRun(
        source=(
            f"workload {spec.name!r}: {len(spec.areas)} areas, "
            f"{format_bytes(spec.mapped_bytes)} mapped, seed {args.seed}; "
            f"{duration_s:g} s of virtual time"
        ),
        snapshots=snaps,
        truth=[space.truth_snapshot(s) for s in snaps],
        accuracy=[space.accuracy(s, HOT_THRESHOLD) for s in snaps],
        nr_regions=nr_regions,
        duration_us=duration_us,
        monitor_cpu_s=ctx.monitor_cpu_s,
        attrs=attrs,
    )


def _row_means(values: np.ndarray, rec: Record, hm: Heatmap) -> list[float | None]:
    """Mean of a per-snapshot value over the snapshots ending in each heatmap row."""
    edges = hm.time_edges_us
    row = np.clip(np.searchsorted(edges, rec.snap_end_us, side="left") - 1, 0, hm.time_bins - 1)
    out: list[float | None] = []
    for r in range(hm.time_bins):
        m = row == r
        out.append(float(values[m].mean()) if m.any() else None)
    return out


def show(run: DemoRun, *, rows: int, cols: int, color: bool, simulated: bool) -> str:
    """The demo's report as text."""
    out: list[str] = []
    if simulated:
        out.append(
            "pydamon demo: this address space is SIMULATED (pydamon.ops.sim); "
            "no real memory is monitored."
        )
    a = run.attrs
    out.append(run.source)
    out.append(
        f"monitoring: sampling {a.sample_interval_us} us, aggregation {a.aggr_interval_us} us, "
        f"{a.min_nr_regions}..{a.max_nr_regions} regions; {len(run.snapshots)} aggregations"
    )
    if not run.snapshots:
        out.append("no aggregation finished; run longer (--duration)")
        return "\n".join(out)
    rec = Record.from_snapshots(run.snapshots)
    # each snapshot counts in the rows it overlaps (rows need not align with aggregations)
    grid = functools.partial(
        heatmap,
        time_bins=rows,
        address_bins=cols,
        time_range=(int(rec.snap_start_us[0]), int(rec.snap_end_us[-1])),
        time_weight="overlap",
    )
    hm = grid(rec)
    measured = heatmap_lines(hm, color=color)
    wss = wss_bytes(rec)
    wss_rows = _row_means(wss.astype(float), rec, hm)
    if run.truth is not None:
        # the truth on the same columns as the measurement
        ht = grid(
            Record.from_snapshots(run.truth),
            address_range=(hm.spans[0][0], hm.spans[-1][1]) if hm.spans else None,
        )
        truth_lines = heatmap_lines(ht, color=color)
        true_wss = np.array([x.true_wss_bytes for x in run.accuracy])
        true_rows = _row_means(true_wss, rec, hm)
    out.append("")
    head = f"{'measured (DAMON)':<{cols}}"
    if run.truth is not None:
        head += f" | {'ground truth':<{cols}} | wss measured/true"
    else:
        head += " | wss"
    out.append(head)
    t0 = hm.time_edges_us[0]
    for i in range(rows):
        line = measured[i]
        w = wss_rows[i]
        ws = "" if w is None else format_bytes(w, precision=1)
        if run.truth is not None:
            tw = true_rows[i]
            line += (
                f" | {truth_lines[i]} | {ws}/{'' if tw is None else format_bytes(tw, precision=1)}"
            )
        else:
            line += f" | {ws}"
        secs = (hm.time_edges_us[i + 1] - t0) / 1e6
        out.append(f"{line}  {secs:6.1f}s")
    out.append(
        f"# access rate: 0 = idle .. 9 = accessed in every sample; time goes down, "
        f"{(hm.time_edges_us[-1] - t0) / rows / 1e6:.2f} s per row"
    )
    spans = ", ".join(f"{s:#x}-{e:#x}" for s, e in hm.spans)
    out.append(
        f"# address: {format_bytes(hm.span_bytes)} in {len(hm.spans)} span(s) ({spans}), "
        f"{format_bytes(hm.bytes_per_column)} per column; big unmapped gaps collapsed"
    )

    out.append("")
    out.append("working set size (bytes accessed in an aggregation interval), percentiles:")
    pcts = percentiles_of(wss)
    if run.truth is not None:
        true_pcts = percentiles_of(np.rint(true_wss).astype(np.int64))
        out.append(f"  {'pct':>4}  {'measured':>14}  {'true':>14}")
        for (p, v), (_, tv) in zip(pcts, true_pcts):
            out.append(f"  {p:>4}  {format_bytes(v):>14}  {format_bytes(tv):>14}")
        out.append(
            f"  {'avg':>4}  {format_bytes(float(wss.mean())):>14}  "
            f"{format_bytes(float(true_wss.mean())):>14}"
        )
    else:
        for p, v in pcts:
            out.append(f"  {p:>4}  {format_bytes(v):>14}")

    if run.accuracy:
        acc = run.accuracy
        err = float(np.mean([x.rate_error for x in acc]))
        prec = float(np.mean([x.hot_precision for x in acc]))
        recall = float(np.mean([x.hot_recall for x in acc]))
        wss_err = float(
            np.mean([abs(x.measured_wss_bytes - x.true_wss_bytes) for x in acc])
            / max(float(true_wss.mean()), 1.0)
        )
        out.append("")
        out.append(f"accuracy vs ground truth (mean over {len(acc)} aggregations):")
        out.append(f"  access-rate error per byte: {err * 100:.1f} percentage points")
        out.append(
            f"  hot memory (>= {HOT_THRESHOLD:.0%} access rate): precision {prec:.1%}, "
            f"recall {recall:.1%}"
        )
        out.append(f"  working set size error: {wss_err:.1%} of the true mean")
    if run.nr_regions:
        out.append(
            f"regions: {min(run.nr_regions)}..{max(run.nr_regions)} "
            f"(mean {np.mean(run.nr_regions):.0f}); monitoring CPU {run.monitor_cpu_s:.2f} s for "
            f"{run.duration_us / 1e6:g} s of monitored time"
        )
    return "\n".join(out)


def real_unavailable_reason() -> str | None:
    """Why real-memory monitoring is impossible here, or None."""
    from pydamon.features import FeatureMissing, require

    try:
        require("vaddr")
    except FeatureMissing as err:
        return str(err)
    return None


def monitor_real(args: argparse.Namespace) -> DemoRun:
    """Run the workload program on real memory and monitor it through vaddr (real time)."""
    import json
    import subprocess

    from pydamon.ops.vaddr import VaddrOperations

    name = args.workload
    if name not in WORKLOADS and not os.path.exists(name):
        raise CliError(f"unknown workload {name!r}; use one of {', '.join(WORKLOADS)}", EXIT_USAGE)
    duration_s = args.duration or DEFAULT_DURATION_S.get(os.path.basename(name), 20.0)
    attrs = attrs_from_args(args)
    size = args.size or "64M"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pydamon.workload", name, "--size", size],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise CliError(f"the workload program failed to start (exit {proc.wait()})")
        info = json.loads(line)
        ctx = Context(VaddrOperations(), [Target(pid=info["pid"])], attrs, seed=args.seed)
        duration_us = int(duration_s * 1e6)
        snaps, nr_regions = monitor_for(ctx, duration_us)
    finally:
        proc.kill()
        proc.wait()
    areas = ", ".join(f"{a['name']} {format_bytes(a['end'] - a['start'])}" for a in info["areas"])
    return DemoRun(
        source=(
            f"REAL memory: workload program {name!r} (pid {info['pid']}: {areas}) monitored "
            f"through vaddr (page_idle) for {duration_s:g} s of real time"
        ),
        snapshots=snaps,
        nr_regions=nr_regions,
        duration_us=duration_us,
        monitor_cpu_s=ctx.monitor_cpu_s,
        attrs=attrs,
    )


def run(args: argparse.Namespace) -> int:
    if args.rows < 1 or args.cols < 4:
        raise CliError("--rows must be >= 1 and --cols >= 4", EXIT_USAGE)
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    mode = getattr(args, "mode", "sim")
    if mode in ("auto", "real"):
        why = real_unavailable_reason()
        if why is None:
            result = monitor_real(args)
            print(show(result, rows=args.rows, cols=args.cols, color=color, simulated=False))
            return 0
        if mode == "real":
            from pydamon.cli.main import EXIT_UNSUPPORTED

            raise CliError(f"real-memory demo impossible here: {why}", EXIT_UNSUPPORTED)
    else:
        why = None
    result = monitor_sim(args)
    print(show(result, rows=args.rows, cols=args.cols, color=color, simulated=True))
    if why:
        print(f"(real memory not used: {why}; see `pydamon features`)")
    return 0
