"""Benchmark: a DAMOS pageout scheme on a workload with a large cold area, beside kernel DAMON.

Run INSIDE the test guest (it sets up zram swap and writes the guest's DAMON sysfs files):

    ../shared/testbed/run-in-vm.sh -m 2G -t 1500 -- .venv/bin/python bench/damos_reclaim.py

The workload program (``hotcold``: 10% hot, 25% warm, 60% cold, ``--size``) runs for
``--seconds`` under

- nothing (baseline),
- a pydamon ``pageout`` scheme (``damos.Scheme`` on a ``vaddr`` context, in its own process, so
  its CPU time is measured apart): ``4K max 0 0 <min-age> max pageout`` with a size quota,
- the kernel's DAMON doing the same: a sysfs vaddr ``pageout`` scheme with the same pattern,
  quota and intervals on the same pid,
- the kernel's DAMON_RECLAIM (paddr, the whole guest), same parameters,

all in one guest boot with zram swap, workload and monitors on vCPU 0. Printed: RSS over time,
average/final RSS, memory saved vs. the baseline, the workload's CPU time (it is paced by its
tick, so extra CPU is the cost of refaults: its slowdown), its major faults, the monitor's CPU
time (pydamon's process or the kdamond thread) and whether the workload's data checksums held.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from modules import (  # noqa: E402  (the modules benchmark's guest helpers)
    RECLAIM,
    KernelDamonReclaim,
    KernelVaddrPageout,
    Workload,
    cpu_and_majflt,
    in_test_guest,
    reset_swap,
    setup_zram,
    status_kb,
)

MiB = 1 << 20

# The pydamon monitor: a vaddr context with one pageout scheme, until SIGTERM.
MONITOR = """
import signal, sys
from pydamon.core import Attrs, Context, Target
from pydamon.damos import parse_schemes
from pydamon.ops.vaddr import VaddrOperations
pid, sample_us, aggr_us = (int(x) for x in sys.argv[1:4])
scheme_text = sys.argv[4]
ctx = Context(VaddrOperations(), [Target(pid=pid)],
              Attrs(sample_interval_us=sample_us, aggr_interval_us=aggr_us,
                    ops_update_interval_us=aggr_us * 5))
schemes = parse_schemes(scheme_text)
ctx.set_schemes(schemes)
signal.signal(signal.SIGTERM, lambda *_: ctx.stop())
ctx.run()
s = schemes[0].stats
print(s.nr_tried, s.sz_tried, s.nr_applied, s.sz_applied, s.qt_exceeds, flush=True)
"""


class PydamonScheme:
    def __init__(self, pid: int, p: argparse.Namespace) -> None:
        text = (
            f"4K max 0 0 {p.min_age_us}us max pageout {p.quota_ms}ms {p.quota_sz} 1s 0 0 1 "
            "none 0 0 0 0"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", MONITOR, str(pid), str(p.sample_us), str(p.aggr_us), text],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.proc.pid
        self.stats = ""

    def cpu_s(self) -> float:
        return cpu_and_majflt(self.pid)[0]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=120)
        if self.proc.returncode:
            raise RuntimeError(f"pydamon monitor failed: {err.strip().splitlines()[-1:]}")
        self.stats = out.strip()


def run(name: str, start: Any, p: argparse.Namespace) -> dict[str, Any]:
    reset_swap()
    wl = Workload(p.size, p.tick_ms, seed=1)
    time.sleep(2)  # pages populated, first ticks done
    cpu0, flt0 = cpu_and_majflt(wl.pid)
    monitor = start(wl.pid) if start is not None else None
    rss: list[int] = []
    monitor_cpu = 0.0
    t_end = time.monotonic() + p.seconds
    while time.monotonic() < t_end:
        time.sleep(1)
        rss.append(status_kb(wl.pid, "VmRSS"))
        if monitor is not None:
            monitor_cpu = monitor.cpu_s()
    cpu1, flt1 = cpu_and_majflt(wl.pid)
    if monitor is not None:
        monitor.stop()
    ok = wl.command("verify")["ok"]
    wl.stop()
    return {
        "config": name,
        "rss": rss,
        "workload_cpu_s": cpu1 - cpu0,
        "majflt": flt1 - flt0,
        "monitor_cpu_s": monitor_cpu,
        "data_ok": ok,
        "stats": getattr(monitor, "stats", ""),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="128M", help="workload size")
    ap.add_argument("--tick-ms", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--min-age-us", type=int, default=6_000_000)
    ap.add_argument("--quota-ms", type=int, default=0)
    ap.add_argument("--quota-sz", type=int, default=32 * MiB)
    ap.add_argument("--sample-us", type=int, default=100_000)
    ap.add_argument("--aggr-us", type=int, default=2_000_000)
    ap.add_argument("--no-kernel", action="store_true", help="skip the kernel DAMON runs")
    p = ap.parse_args()
    if not in_test_guest():
        print("bench/damos_reclaim.py: error: run it inside the test guest (run-in-vm.sh)",
              file=sys.stderr)  # fmt: skip
        return 2
    if os.geteuid() != 0:
        print("bench/damos_reclaim.py: error: run as root", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {0})
    setup_zram(512 * MiB)
    configs: list[tuple[str, Any]] = [
        ("no scheme", None),
        ("pydamon pageout scheme (vaddr)", lambda pid: PydamonScheme(pid, p)),
    ]
    if not p.no_kernel:
        configs.append(("kernel DAMON vaddr pageout", lambda pid: KernelVaddrPageout(pid, p)))
        if os.path.isdir(RECLAIM):
            configs.append(("kernel DAMON_RECLAIM (paddr)", lambda pid: KernelDamonReclaim(p)))
    rows = [run(name, start, p) for name, start in configs]
    base = rows[0]
    base_avg = sum(base["rss"]) / len(base["rss"])
    print(f"# bench/damos_reclaim.py in the test guest, kernel {os.uname().release}")
    print(
        f"## hotcold {p.size}, {p.seconds:g} s, pageout of regions unaccessed for "
        f"{p.min_age_us / 1e6:g} s, quota {p.quota_sz >> 20} MiB + {p.quota_ms} ms per 1 s, "
        f"intervals {p.sample_us / 1000:g}/{p.aggr_us / 1000:g} ms"
    )
    print(
        "| config | RSS avg MiB | RSS end MiB | saved (avg) | workload CPU s | slowdown "
        "| major faults | monitor CPU s | data ok |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        avg = sum(r["rss"]) / len(r["rss"])
        slow = r["workload_cpu_s"] / base["workload_cpu_s"] - 1 if base["workload_cpu_s"] else 0
        print(
            f"| {r['config']} | {avg / 1024:.1f} | {r['rss'][-1] / 1024:.1f} | "
            f"{(1 - avg / base_avg) * 100:.1f}% | {r['workload_cpu_s']:.2f} | {slow * 100:+.1f}% "
            f"| {r['majflt']} | {r['monitor_cpu_s']:.2f} | {r['data_ok']} |"
        )
    nr_points = min(len(r["rss"]) for r in rows)
    step = max(1, nr_points // 8)
    times = list(range(0, nr_points, step))
    print("\n## RSS (MiB) over time (s since the monitor started)")
    print("| config | " + " | ".join(f"{t + 1}" for t in times) + " |")
    print("|---|" + "---|" * len(times))
    for r in rows:
        print(f"| {r['config']} | " + " | ".join(f"{r['rss'][t] / 1024:.0f}" for t in times) + " |")
    for r in rows:
        if r["stats"]:
            print(f"# {r['config']} stats (nr_tried sz_tried nr_applied sz_applied qt_exceeds): "
                  f"{r['stats']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
