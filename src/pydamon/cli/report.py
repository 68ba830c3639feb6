"""``pydamon report``: heatmap, wss, access, footprints, times, nr_regions, raw, info.

Every report reads pydamon records and damo records (``json``, ``json_compressed``,
``perf_script``) alike; ``access`` also reads a running background monitor (``--live``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from pydamon.cli.common import address, human_bytes, human_time_us, is_tty, size_bytes, time_us
from pydamon.cli.main import EXIT_FAILURE, EXIT_USAGE, CliError
from pydamon.record import CorruptColumn, Record, RecordError, read_record
from pydamon.report import access, footprints, percentiles, render, spans, times, wss
from pydamon.report.heatmap import Heatmap, check_resolution, heatmap

REPORT_TYPES = ("heatmap", "wss", "access", "footprints", "times", "nr_regions", "raw", "info")

EPILOG = """\
examples:
  pydamon report heatmap                          # terminal heatmap of ./pydamon.data
  pydamon report heatmap -i damon.data --output heat.png --resol 200 400
  pydamon report heatmap --time_range 10s 20s --address_range 0x7f0000000000 0x7f0040000000
  pydamon report wss --range 0 101 10             # working set size percentiles
  pydamon report wss --sortby time --plot wss.png
  pydamon report access --snapshot -1 --sort_regions_by access_rate
  pydamon report access --live                    # the running 'pydamon start' monitor
  pydamon report footprints --json
  pydamon report times --access_rate 50 100 --age 1s max
  pydamon report nr_regions
  pydamon report raw | less
"""


def register(sub: argparse._SubParsersAction) -> None:
    # access, raw, info live in report_snapshots.py (which uses this module's load())
    from pydamon.cli.report_snapshots import report_access, report_info, report_raw

    p = sub.add_parser(
        "report",
        help="report on a record (pydamon's or damo's) or a running monitor",
        description="Reports on a record file: " + ", ".join(REPORT_TYPES) + ".",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rsub = p.add_subparsers(dest="report_type", metavar="TYPE")
    p.set_defaults(func=lambda a: _no_type(p))

    def common(sp: argparse.ArgumentParser, *, targets: bool = True) -> None:
        sp.add_argument(
            "-i",
            "--input",
            metavar="FILE",
            help="record file (default: pydamon.data, else damon.data)",
        )
        if targets:
            sp.add_argument("--target", type=int, metavar="INDEX", help="only this target")
        sp.add_argument("--json", action="store_true", help="machine-readable JSON output")

    def distribution_options(sp: argparse.ArgumentParser, range_help: str | None = None) -> None:
        sp.add_argument("--range", nargs=3, type=int, metavar=("START", "STOP", "STEP"),
                        default=[0, 101, 25], help=range_help)  # fmt: skip
        sp.add_argument("--sortby", choices=("size", "time"), default="size")

    hm = rsub.add_parser(
        "heatmap",
        help="access heatmap over time and address (terminal, PNG, SVG)",
        epilog="examples:\n  pydamon report heatmap --output heat.png\n"
        "  pydamon report heatmap --resol 30 120 --draw_range all\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(hm)
    hm.add_argument(
        "--output",
        metavar="FILE|raw",
        help="image file (.png .svg .pdf .jpg, needs matplotlib) or 'raw' for triples",
    )
    hm.add_argument(
        "--resol", nargs=2, type=int, metavar=("TIME_ROWS", "ADDR_COLS"), help="cells of the map"
    )
    hm.add_argument(
        "--time_range",
        nargs=2,
        type=time_us,
        metavar=("START", "END"),
        help="time since the record start (e.g. 10s 20s)",
    )
    hm.add_argument("--address_range", nargs=2, type=address, metavar=("START", "END"))
    hm.add_argument(
        "--draw_range",
        choices=("all", "hottest"),
        default="all",
        help="without --address_range: every monitored span, holes between them collapsed "
        "(all, default) or only the span with the most accesses (hottest)",
    )
    hm.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    hm.add_argument(
        "--scale",
        choices=("absolute", "relative"),
        default="absolute",
        help="digits: access rate 0..100%% (absolute) or the map's min..max (relative, damo's)",
    )
    hm.set_defaults(func=_salvaging(report_heatmap))

    ws = rsub.add_parser(
        "wss",
        help="working set size distribution",
        epilog="examples:\n  pydamon report wss\n"
        "  pydamon report wss --range 0 101 5 --plot wss.png\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(ws)
    distribution_options(ws, "percentiles (default 0 101 25)")
    ws.add_argument(
        "--min_access_rate",
        type=float,
        default=0.0,
        metavar="PERCENT",
        help="count a region in the working set from this access rate (default: any access)",
    )
    ws.add_argument(
        "--exclude_samples",
        type=int,
        default=0,
        metavar="N",
        help="skip the first N snapshots of each target (damo skips 20)",
    )
    ws.add_argument("--plot", metavar="FILE", help="plot the distribution to an image")
    ws.add_argument("--all_wss", action="store_true", help="print every snapshot's wss")
    ws.set_defaults(func=_salvaging(report_wss))

    ac = rsub.add_parser(
        "access",
        help="regions of one snapshot with size, access rate, age and temperature summary",
        epilog="examples:\n  pydamon report access\n  pydamon report access --snapshot 0\n"
        "  pydamon report access --live --sort_regions_by access_rate --top 20\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(ac)
    ac.add_argument("--snapshot", type=int, default=-1, metavar="N", help="index (-1: last)")
    ac.add_argument(
        "--live",
        nargs="?",
        const="",
        metavar="NAME",
        help="read the latest snapshot of a running background monitor",
    )
    ac.add_argument(
        "--backend",
        choices=("auto", "kernel", "user"),
        default="auto",
        help="with --live: only a monitor on this engine (default auto: any)",
    )
    ac.add_argument(
        "--sort_regions_by",
        choices=tuple(access.REGION_ORDERS),
        default="address",
    )
    ac.add_argument("--top", type=int, metavar="N", help="only the first N regions after sorting")
    ac.add_argument("--raw_form", action="store_true", help="damo's raw form")
    ac.set_defaults(func=_salvaging(report_access))

    fp = rsub.add_parser("footprints", help="memory footprint (RSS, VSZ, system used) over time")
    common(fp)
    distribution_options(fp)
    fp.add_argument("--plot", metavar="FILE", help="plot RSS over time to an image")
    fp.set_defaults(func=_salvaging(report_footprints))

    tm = rsub.add_parser(
        "times",
        help="time ranges when an access pattern was present",
        epilog="examples:\n  pydamon report times --access_rate 80 100\n"
        "  pydamon report times --sz_region 1M max --age 5s max\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(tm)
    tm.add_argument("--sz_region", nargs=2, metavar=("MIN", "MAX"), help="region size range")
    tm.add_argument("--access_rate", nargs=2, metavar=("MIN", "MAX"), help="percent range")
    tm.add_argument("--age", nargs=2, metavar=("MIN", "MAX"), help="age range (e.g. 1s max)")
    tm.add_argument("--address", nargs=2, type=address, metavar=("START", "END"))
    tm.set_defaults(func=_salvaging(report_times))

    nr = rsub.add_parser("nr_regions", help="distribution of the number of regions")
    common(nr)
    distribution_options(nr)
    nr.set_defaults(func=_salvaging(report_nr_regions))

    raw = rsub.add_parser("raw", help="every snapshot in damo's raw text form")
    common(raw)
    raw.add_argument("--max_snapshots", type=int, metavar="N")
    raw.set_defaults(func=_salvaging(report_raw))

    info = rsub.add_parser("info", help="what a record holds (format, targets, time, size)")
    common(info, targets=False)
    info.set_defaults(func=_salvaging(report_info))


def _salvaging(report: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``report``, run again on the intact snapshots if a mapped record's column turns out
    damaged while it runs (checksums are checked on first use; the notes name what is lost)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return report(args)
        except CorruptColumn as err:
            if getattr(args, "verify", False):
                raise CliError(str(err)) from None
            args.verify = True
            return report(args)

    return run


def _no_type(p: argparse.ArgumentParser) -> int:
    p.print_help(sys.stderr)
    return EXIT_USAGE


# -- input -----------------------------------------------------------------------------------------
def load(args: argparse.Namespace) -> Record:
    path = args.input
    if path is None:
        path = "pydamon.data" if os.path.exists("pydamon.data") else "damon.data"
        if not os.path.exists(path):
            raise CliError(
                "no record file given and neither ./pydamon.data nor ./damon.data exists; "
                "use -i FILE (or 'pydamon record' first)",
                EXIT_USAGE,
            )
    try:
        rec = read_record(path, verify=getattr(args, "verify", False))
    except RecordError as err:
        raise CliError(str(err)) from None
    for w in rec.warnings:
        print(f"pydamon report: note: {path}: {w}", file=sys.stderr)
    target = getattr(args, "target", None)
    if target is not None:
        if target not in rec.target_indexes():
            raise CliError(
                f"{path} has no target {target}; it has targets {rec.target_indexes()}",
                EXIT_USAGE,
            )
        rec = rec.for_target(target)
    if not rec.nr_snapshots:
        raise CliError(f"{path} holds no snapshots" + (" that are intact" if rec.damage else ""))
    return rec


def _targets(rec: Record) -> list[int]:
    return rec.target_indexes()


def _tid(rec: Record, tidx: int) -> Any:
    tid = rec.target_id_of(tidx)
    return tid if tid is not None else tidx


def _emit_json(data: Any) -> None:
    print(json.dumps(data, indent=1))


# -- heatmap ---------------------------------------------------------------------------------------
def heatmap_of(args: argparse.Namespace, rec: Record) -> Heatmap:
    """The heatmap of the record's first (or chosen) target that the options ask for.

    By default every monitored span is drawn with the holes between them collapsed (as the
    terminal heatmap of ``pydamon demo``); ``--draw_range hottest`` draws only the contiguous
    span with the most accesses.
    """
    rec = rec.for_target(_targets(rec)[0])
    origin = int(rec.snap_start_us.min())
    time_range = None
    if args.time_range:
        time_range = (origin + args.time_range[0], origin + args.time_range[1])
        if time_range[1] <= time_range[0]:
            raise CliError("--time_range END must be after START", EXIT_USAGE)
    addr_range: tuple[int, int] | None = (
        (args.address_range[0], args.address_range[1]) if args.address_range else None
    )
    if addr_range is not None and addr_range[1] <= addr_range[0]:
        raise CliError("--address_range END must be above START", EXIT_USAGE)
    if addr_range is None and args.draw_range == "hottest":
        addr_range = spans.hottest_span(rec)
    image = args.output not in (None, "raw")
    rows, cols = args.resol if args.resol else ((300, 500) if image else (30, 80))
    if rows <= 0 or cols <= 0:
        raise CliError("--resol needs positive numbers", EXIT_USAGE)
    try:
        check_resolution(rows, cols)
    except ValueError as err:
        raise CliError(f"--resol {rows} {cols}: {err}", EXIT_USAGE) from None
    return heatmap(
        rec, time_range=time_range, address_range=addr_range, time_bins=rows, address_bins=cols
    )


def report_heatmap(args: argparse.Namespace) -> int:
    rec = load(args)
    hm = heatmap_of(args, rec)
    origin = int(rec.snap_start_us.min())
    grid = hm.grid
    if args.json:
        _emit_json(
            {
                "time_edges_us": (hm.time_edges_us - origin).tolist(),
                "spans": [list(sp) for sp in hm.spans],
                "bytes_per_column": hm.bytes_per_column,
                "access_rate": [
                    [None if np.isnan(v) else round(float(v), 6) for v in row] for row in grid
                ],
            }
        )
    elif args.output == "raw":
        a_edges = [hm.column_address(c) for c in range(hm.address_bins)]
        print(render.heatmap_raw(np.nan_to_num(grid), hm.time_edges_us, np.asarray(a_edges)))
    elif args.output:
        try:
            render.heatmap_image(hm, args.output, time_origin_us=origin)
        except RuntimeError as err:  # matplotlib missing: an environment problem, exit 1
            raise CliError(str(err), EXIT_FAILURE) from None
        except ValueError as err:
            raise CliError(f"cannot write {args.output}: {err}", EXIT_USAGE) from None
        print(f"heatmap written to {args.output}", file=sys.stderr)
    else:
        color = args.color == "always" or (args.color == "auto" and is_tty(sys.stdout))
        print(render.render_heatmap(hm, color=color, scale=args.scale))
    return 0


# -- distributions ---------------------------------------------------------------------------------
def _percentiles(rng: list[int]) -> list[int]:
    try:
        return percentiles.percentile_range(*rng)
    except ValueError as err:
        raise CliError(str(err), EXIT_USAGE) from None


def _dist_lines(
    title: str, values: np.ndarray, pcts: list[int], sortby: str, fmt: Callable[[float], str]
) -> list[str]:
    lines = [f"# <percentile> <{title}>"]
    dist = percentiles.distribution(values, pcts, sortby)
    if dist is None:
        return lines + ["# no data"]
    lines.append(f"# avr:\t{fmt(dist.average)}")
    top = max(max(v for _, v in dist.rows), 1)
    for p, v in dist.rows:
        bar = "*" * max(int(v / top * 40), 1 if v else 0)
        lines.append(f"{p:3d}\t{fmt(v):>14}\t|{bar:<40}|")
    return lines


def _percentiles_json(values: np.ndarray, pcts: list[int]) -> dict[str, int]:
    return {str(p): v for p, v in percentiles.percentiles_of(values, pcts)}


def report_wss(args: argparse.Namespace) -> int:
    if not 0 <= args.min_access_rate <= 100:  # also refuses nan
        raise CliError(f"--min_access_rate {args.min_access_rate}: give 0..100 (percent)",
                       EXIT_USAGE)  # fmt: skip
    if args.exclude_samples < 0:
        raise CliError(f"--exclude_samples {args.exclude_samples}: give 0 or more", EXIT_USAGE)
    rec = load(args)
    pcts = _percentiles(args.range)
    out_json = []
    lines: list[str] = []
    for tidx in _targets(rec):
        values = wss.target_wss(rec, tidx, args.min_access_rate / 100, args.exclude_samples)
        out_json.append(
            {
                "target_index": tidx,
                "target_id": _tid(rec, tidx),
                "nr_snapshots": int(len(values)),
                "average_bytes": float(values.mean()) if len(values) else 0.0,
                "percentiles": _percentiles_json(values, pcts),
                **({"all_bytes": values.tolist()} if args.all_wss else {}),
            }
        )
        lines.append(f"# target_id\t{_tid(rec, tidx)}")
        if args.all_wss:
            lines += [str(int(v)) for v in values]
        else:
            lines += _dist_lines("wss", values, pcts, args.sortby, human_bytes)
        if args.plot:
            ys = np.sort(values) if args.sortby == "size" else values
            xs = np.linspace(0, 100, len(ys))
            _plot(xs, ys, args.plot, "percentile" if args.sortby == "size" else "runtime (%)",
                  "working set size (bytes)")  # fmt: skip
    if args.json:
        _emit_json(out_json)
    elif args.plot:
        print(f"plot written to {args.plot}", file=sys.stderr)
    else:
        print("\n".join(lines))
    return 0


def _plot(xs: np.ndarray, ys: np.ndarray, path: str, xlabel: str, ylabel: str) -> None:
    try:
        render.line_plot(xs, ys, path, xlabel=xlabel, ylabel=ylabel)
    except RuntimeError as err:  # matplotlib missing: an environment problem, exit 1
        raise CliError(str(err), EXIT_FAILURE) from None
    except ValueError as err:
        raise CliError(f"cannot write {path}: {err}", EXIT_USAGE) from None


def report_footprints(args: argparse.Namespace) -> int:
    rec = load(args)
    pcts = _percentiles(args.range)
    out_json = []
    lines = []
    for tidx in _targets(rec):
        sub = rec.for_target(tidx)
        cols = footprints.footprint_columns(sub)
        entry: dict[str, Any] = {"target_index": tidx, "target_id": _tid(rec, tidx)}
        lines.append(f"# target_id\t{_tid(rec, tidx)}")
        for name in footprints.FOOTPRINTS:
            values = cols[name]
            entry[name] = {
                "average": float(values.mean()) if len(values) else None,
                "percentiles": _percentiles_json(values, pcts),
            }
            label = name.removesuffix("_bytes")
            if len(values):
                lines += _dist_lines(label, values, pcts, args.sortby, human_bytes)
            else:
                lines.append(f"# {label}: not recorded (simulated or kernel-only target)")
        out_json.append(entry)
        if args.plot:
            _plot(*footprints.rss_over_time(sub), args.plot, "time (s)", "RSS (bytes)")
    if args.json:
        _emit_json(out_json)
    else:
        print("\n".join(lines))
    return 0


def report_nr_regions(args: argparse.Namespace) -> int:
    rec = load(args)
    pcts = _percentiles(args.range)
    out_json = []
    lines = []
    for tidx in _targets(rec):
        values = rec.for_target(tidx).nr_regions
        out_json.append(
            {
                "target_index": tidx,
                "target_id": _tid(rec, tidx),
                "average": float(values.mean()),
                "percentiles": _percentiles_json(values, pcts),
            }
        )
        lines.append(f"# target_id\t{_tid(rec, tidx)}")
        lines += _dist_lines("nr_regions", values, pcts, args.sortby, lambda v: f"{v:.0f}")
    if args.json:
        _emit_json(out_json)
    else:
        print("\n".join(lines))
    return 0


# -- times -----------------------------------------------------------------------------------------
def _range_arg(pair: list[str] | None, parse: Any, what: str) -> tuple[Any, Any]:
    if not pair:
        return None, None
    lo_t, hi_t = pair
    try:
        lo = 0 if lo_t == "min" else parse(lo_t)
        hi = None if hi_t == "max" else parse(hi_t)
    except (ValueError, argparse.ArgumentTypeError):
        raise CliError(f"bad {what} range {lo_t} {hi_t}", EXIT_USAGE) from None
    return lo, hi


def report_times(args: argparse.Namespace) -> int:
    rec = load(args)
    min_sz, max_sz = _range_arg(args.sz_region, size_bytes, "--sz_region")
    lo_rate, hi_rate = _range_arg(args.access_rate, float, "--access_rate")
    min_age, max_age = _range_arg(args.age, time_us, "--age")
    origin = int(rec.snap_start_us.min())
    out_json = []
    lines = []
    for tidx in _targets(rec):
        ranges = times.pattern_times(
            rec.for_target(tidx),
            min_size=min_sz or 0,
            max_size=max_sz,
            min_access_rate=(lo_rate or 0) / 100,
            max_access_rate=1.0 if hi_rate is None else hi_rate / 100,
            min_age_us=min_age or 0,
            max_age_us=max_age,
            address_range=(args.address[0], args.address[1]) if args.address else None,
        )
        total = sum(r.duration_us for r in ranges)
        out_json.append(
            {
                "target_index": tidx,
                "target_id": _tid(rec, tidx),
                "ranges_us": [[r.start_us - origin, r.end_us - origin] for r in ranges],
                "total_us": total,
            }
        )
        lines.append(f"# target_id\t{_tid(rec, tidx)}")
        for r in ranges:
            lines.append(
                f"{human_time_us(r.start_us - origin)}-{human_time_us(r.end_us - origin)} "
                f"({human_time_us(r.duration_us)})"
            )
        lines.append(f"# total: {human_time_us(total)} in {len(ranges)} ranges")
    if args.json:
        _emit_json(out_json)
    else:
        print("\n".join(lines))
    return 0
