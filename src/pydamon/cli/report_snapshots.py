"""``pydamon report access``, ``raw`` and ``info``: one snapshot's regions, every snapshot in
damo's raw form, and what a record file holds (its damage included). Registered by
:mod:`pydamon.cli.report`."""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from pydamon.cli.common import human_bytes, human_time_us
from pydamon.cli.main import EXIT_USAGE, CliError
from pydamon.cli.report import _emit_json, load
from pydamon.cli.rundir import Instance
from pydamon.record import Record, RecordError, read_record
from pydamon.report import access, render
from pydamon.report.info import record_info


# -- access ----------------------------------------------------------------------------------------
def _load_live(name: str, backend: str = "auto") -> Record:
    from pydamon.cli import rundir

    insts = [i for i in rundir.instances() if i.alive]
    if backend != "auto":  # only the monitors running on that engine
        insts = [i for i in insts if _backend_of(i) == backend]
        if not insts:
            raise CliError(
                f"no running background monitor on the {backend} backend; see 'pydamon status'",
                EXIT_USAGE,
            )
    if name:
        insts = [i for i in insts if i.name == name]
        if not insts:
            raise CliError(f"no running monitor named {name!r}; see 'pydamon status'", EXIT_USAGE)
    if not insts:
        raise CliError("no running background monitor; start one with 'pydamon start'", EXIT_USAGE)
    if len(insts) > 1:
        names = ", ".join(i.name for i in insts)
        raise CliError(f"several monitors run ({names}); name one: --live NAME", EXIT_USAGE)
    path = insts[0].file("latest.rec")
    if not os.path.exists(path):
        raise CliError(f"monitor {insts[0].name} has no snapshot yet; retry after one aggregation")
    try:
        return read_record(path)
    except RecordError as err:
        raise CliError(str(err)) from None


def _backend_of(inst: Instance) -> str:
    """The engine a background monitor runs on, from its status file (user if unsaid)."""
    from pydamon.cli import rundir

    try:
        status = rundir.read_json(inst.file("status.json"))
    except (OSError, ValueError):
        return "user"
    return str(status.get("backend", "user"))


def report_access(args: argparse.Namespace) -> int:
    if args.live is not None:
        rec = _load_live(args.live, getattr(args, "backend", "auto"))
        if args.target is not None:
            rec = rec.for_target(args.target)
    else:
        rec = load(args)
    if args.top is not None and args.top < 0:
        raise CliError(f"--top {args.top}: give 0 or more", EXIT_USAGE)
    n = rec.nr_snapshots
    i = args.snapshot if args.snapshot >= 0 else n + args.snapshot
    if not 0 <= i < n:
        raise CliError(f"no snapshot {args.snapshot}; the record has {n} (0..{n - 1})", EXIT_USAGE)
    if args.raw_form:
        print(render.raw_form(rec.select(np.arange(n) == i)))
        return 0
    data = access.snapshot_access(rec, i)
    regions = data["regions"]
    shown = access.sort_regions(regions, args.sort_regions_by, args.top)
    summary = access.temperature_summary(regions)
    if args.json:
        data["regions"] = shown
        data["temperature_percentiles"] = summary
        _emit_json(data)
        return 0
    origin = int(rec.snap_start_us.min())
    print(access.heat_string(regions))
    print(
        f"# snapshot {i} of {n}, target {data['target_id'] if data['target_id'] is not None else 0}"
        f", {human_time_us(data['start_us'] - origin)}..{human_time_us(data['end_us'] - origin)}"
        f", {len(regions)} regions, {human_bytes(data['total_bytes'])}"
    )
    print(f"{'#':>4} {'address range':<33} {'size':>12} {'access':>8} {'age':>14} {'temp':>10}")
    for j, r in enumerate(shown):
        print(
            f"{j:>4} {r['start']:#014x}-{r['end']:#014x}   {human_bytes(r['size']):>12} "
            f"{r['access_rate_percent']:>7.1f}% {human_time_us(r['age_us']):>14} "
            f"{r['temperature']:>10.0f}"
        )
    print("# temperature percentiles (by bytes): " + ", ".join(
        f"p{p}: {v:.0f}" for p, v in summary.items()))  # fmt: skip
    hot, total = access.hot_bytes(regions)
    print(
        f"# hot (accessed) {human_bytes(hot)} ({hot * 100 / max(total, 1):.1f}%), "
        f"cold {human_bytes(total - hot)}"
    )
    return 0


# -- raw / info ------------------------------------------------------------------------------------
def report_raw(args: argparse.Namespace) -> int:
    if args.max_snapshots is not None and args.max_snapshots < 0:
        raise CliError(f"--max_snapshots {args.max_snapshots}: give 0 or more", EXIT_USAGE)
    rec = load(args)
    if args.json:
        from pydamon.record.damo_write import damo_json_pieces

        for piece in damo_json_pieces(rec, indent=1):  # snapshot by snapshot, as damo's json
            sys.stdout.write(piece)
        sys.stdout.write("\n")
        return 0
    print(render.raw_form(rec, max_snapshots=args.max_snapshots))
    return 0


def report_info(args: argparse.Namespace) -> int:
    args.verify = True  # every checksum: what is damaged is part of what the record holds
    rec = load(args)
    path = args.input or ("pydamon.data" if os.path.exists("pydamon.data") else "damon.data")
    info = record_info(rec, path)
    if args.json:
        _emit_json(info)
        return 0
    state = "" if rec.complete else ", NOT finalized: cut short or still being written"
    print(f"file:        {path} ({human_bytes(info['file_bytes'])}, {info['format']}{state})")
    print(f"duration:    {human_time_us(info['duration_us'])}")
    print(f"snapshots:   {info['nr_snapshots']} ({info['nr_regions_total']} regions in all)")
    print(f"ops:         {info['ops']}")
    print(
        f"intervals:   sample {info['sample_interval_us']} us, aggr {info['aggr_interval_us']} us"
    )
    for t in info["targets"]:
        print(f"target {t['index']}:    id {t['target_id']} pid {t['pid']} {t['name']}")
    for d in rec.damage:
        print(f"damaged:     {d.describe()}")
    return 0
