"""``pydamon features``: what this kernel and user allow pydamon to do with real memory."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from pydamon import features
from pydamon.cli.main import EXIT_UNSUPPORTED
from pydamon.kernel import KernelCapabilities


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
    p.add_argument(
        "--damon-root",
        default=features.DEFAULT_ROOT,
        metavar="DIR",
        help="the kernel DAMON sysfs directory to inspect, read-only (default: %(default)s)",
    )
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
    kernel = features.kernel_damon(args.damon_root)
    if args.json:
        out = {
            "features": features.as_dict(),
            "access_check": asdict(features.access_check_path()),
            "ops": {name: {"usable": not why, "reason": why} for name, why in usable.items()},
            "kernel_damon": {**kernel.to_dict(), "emulated_by_pydamon": _emulated(kernel)}
            if isinstance(kernel, KernelCapabilities)
            else {"root": args.damon_root, "error": kernel},
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
        print()
        print_kernel_damon(kernel, args.damon_root)
    return 0 if not any(usable.values()) else EXIT_UNSUPPORTED


def print_kernel_damon(kernel: KernelCapabilities | str, root: str) -> None:
    if isinstance(kernel, str):
        print(f"kernel DAMON ({root}): cannot inspect: {kernel}")
        return
    if not kernel.sysfs:
        print(f"kernel DAMON ({root}): none (no DAMON sysfs tree)")
        return
    floor = f", Linux {kernel.version_floor}+" if kernel.version_floor else ""
    print(f"kernel DAMON ({root}): present{floor} ({kernel.probed_by})")
    if not kernel.inspected:
        return
    rows = {
        "operations": kernel.operations,
        "actions": kernel.actions,
        "filter types": kernel.filter_types,
        "quota goal metrics": kernel.goal_metrics,
        "quota goal tuners": kernel.goal_tuners,
        "features": tuple(name for name, present in kernel.files.items() if present),
        "features missing": tuple(name for name, present in kernel.files.items() if not present),
        "emulated by pydamon": tuple(_emulated(kernel)),
    }
    for name, values in rows.items():
        print(f"  {name:<18}  {', '.join(values) or '-'}")


def _emulated(kernel: KernelCapabilities) -> list[str]:
    from pydamon.kernel.emulate import emulated_here

    return emulated_here(kernel) if kernel.sysfs and kernel.inspected else []
