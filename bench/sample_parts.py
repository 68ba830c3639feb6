"""Where a sample's CPU time goes in pydamon's vaddr loop, in steady state.

Wraps the loop's parts (the two access-check calls of ``_native.Sampler``, the ops' prepare and
check around them, the sleep, the ops update, merge, split, target_valid) with thread CPU time
counters from the end of the first aggregation on, monitors a ``hotcold`` workload, and prints
CPU ms per sample for each part. Needs page_idle (root): run it in the test guest, e.g.

    bash ../shared/testbed/run-in-vm.sh -m 1G -n -a nopcid -- \\
        .venv/bin/python bench/sample_parts.py --size 256M --seconds 12

(``-n``: the guest without pti.) The workload and the monitor are pinned on vCPU 0, as in
bench/real_overhead.py.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="256M")
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--sample-ms", type=float, default=20.0)
    p.add_argument("--aggr-ms", type=float, default=400.0)
    p.add_argument("--min-regions", type=int, default=10)
    p.add_argument("--max-regions", type=int, default=1000)
    args = p.parse_args()

    from pydamon.core import Attrs, Context, Target
    from pydamon.core import context as core_context
    from pydamon.ops import _native, vaddr
    from pydamon.ops.probe import access_check_path

    cmd = [sys.executable, "-m", "pydamon.workload", "hotcold", "--size", args.size]
    cmd += ["--tick-ms", "50"]
    if os.path.exists("/usr/bin/taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    workload = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert workload.stdout is not None
    pid = json.loads(workload.stdout.readline())["pid"]
    os.sched_setaffinity(0, {0})
    cpu_s: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()
    measuring = [False]

    def wrap(owner: Any, name: str, label: str) -> None:
        method: Callable[..., Any] = getattr(owner, name)

        def timed(*a: Any, **k: Any) -> Any:
            if not measuring[0]:
                return method(*a, **k)
            t0 = time.thread_time()
            try:
                return method(*a, **k)
            finally:
                cpu_s[label] += time.thread_time() - t0
                calls[label] += 1

        setattr(owner, name, timed)

    wrap(core_context.Context, "_step", "whole sample (_step)")
    wrap(vaddr.VaddrOperations, "prepare_access_checks", "ops prepare_access_checks")
    wrap(_native.Sampler, "pick_prepare", "  of which C pick_prepare")
    wrap(vaddr.VaddrOperations, "check_accesses", "ops check_accesses")
    wrap(_native.Sampler, "check_update", "  of which C check_update")
    wrap(core_context.Context, "_sleep_sample_interval", "sleep (the call's own CPU)")
    wrap(vaddr.VaddrOperations, "update", "ops update (maps read)")
    wrap(vaddr.VaddrOperations, "target_valid", "target_valid")
    wrap(core_context.Context, "_merge_regions", "merge")
    wrap(core_context.Context, "_split_regions", "split")
    attrs = Attrs(
        sample_interval_us=int(args.sample_ms * 1000),
        aggr_interval_us=int(args.aggr_ms * 1000),
        ops_update_interval_us=1_000_000,
        min_nr_regions=args.min_regions,
        max_nr_regions=args.max_regions,
    )
    ctx = Context(vaddr.VaddrOperations(), [Target(pid=pid)], attrs, seed=1)
    first_sample = [0]

    def after_aggregation(c: Context) -> None:
        if not measuring[0]:
            first_sample[0] = c.passed_sample_intervals
            measuring[0] = True

    ctx.add_callback("after_aggregation", after_aggregation)
    try:
        time.sleep(2)
        ctx.run(duration_us=int(args.seconds * 1e6))
    finally:
        workload.kill()
        workload.wait()
    samples = ctx.passed_sample_intervals - first_sample[0]
    if samples <= 0:
        sys.exit("sample_parts.py: no sample after the first aggregation; use --seconds")
    print(
        f"{args.size}, sample {args.sample_ms:g} ms, aggr {args.aggr_ms:g} ms, {samples} samples, "
        f"{ctx.nr_regions} regions at the end, path {access_check_path().name}"
    )
    print(f"{'part':>28} {'CPU ms/sample':>14} {'calls':>6}")
    for label, seconds in sorted(cpu_s.items(), key=lambda kv: -kv[1]):
        print(f"{label:>28} {seconds * 1e3 / samples:>14.3f} {calls[label]:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
