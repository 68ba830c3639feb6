"""``pydamon features``: what this kernel and user allow pydamon to do with real memory."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from pydamon import features
from pydamon.cli.main import EXIT_UNSUPPORTED


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "features",
        help="show what the running kernel offers real-memory monitoring",
        description=(
            "Detect page_idle, pagemap PFNs, process_madvise, MADV_PAGEOUT/COLLAPSE, swap, THP, "
            "PSI, cgroup v2 and kernel DAMON sysfs (read-only), and whether the access checks "
            "run in the C helper built at install time or in pure Python. Exit 3 if "
            "vaddr/paddr monitoring is not possible here."
        ),
    )
    p.add_argument("--json", action="store_true", help="print the features as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    found = features.detect()
    usable = {}
    for ops_name in features.NEEDS:
        try:
            features.require(ops_name)
            usable[ops_name] = ""
        except features.FeatureMissing as err:
            usable[ops_name] = str(err)
    if args.json:
        out = {
            "features": features.as_dict(),
            "access_check": asdict(features.access_check_path()),
            "ops": {name: {"usable": not why, "reason": why} for name, why in usable.items()},
        }
        print(json.dumps(out, indent=2))
    else:
        width = max(len(n) for n in found)
        for f in found.values():
            mark = "yes" if f.available else "no "
            fix = f" -> {f.fix}" if f.fix and not f.available else ""
            print(f"{f.name:<{width}}  {mark}  {f.detail}{fix}")
        print()
        for name, why in usable.items():
            print(f"{name} monitoring: {'usable' if not why else 'NOT usable: ' + why}")
    return 0 if not any(usable.values()) else EXIT_UNSUPPORTED
