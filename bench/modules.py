"""Benchmark of the reclaim and thp modules on real memory, beside the kernel's own DAMON.

Run INSIDE the test guest (it writes the guest's DAMON sysfs files and THP mode; it refuses to
run elsewhere):

    ../shared/testbed/run-in-vm.sh -m 2G -t 1500 -- .venv/bin/python bench/modules.py

reclaim: the workload program (``hotcold``, ``--size``) runs for ``--seconds`` under

- nothing (baseline),
- pydamon's ``reclaim`` module on the workload's pid (vaddr, process_madvise pageout),
- the kernel's DAMON doing the same: a sysfs vaddr ``pageout`` scheme with the same pattern,
  quota and intervals on the same pid,
- pydamon's ``reclaim`` module on physical memory (``--ops paddr``, the kernel module's default:
  the biggest System RAM range; pageout through its frame -> (pid, address) reverse map),
- the kernel's DAMON doing DAMON_RECLAIM's work: a sysfs paddr ``pageout`` scheme on the
  biggest System RAM range with the same pattern, quota, watermarks and intervals,
- the kernel's DAMON_RECLAIM module (paddr, whole guest) with the same parameters (in the
  guest's 6.12 kernel it drops its scheme and intervals when committing its parameters: see
  docs/modules.md),

all in the same guest boot, with zram swap. Columns: the workload's average and final RSS, the
memory saved vs. the baseline, the workload's CPU time (it is paced by its tick, so extra CPU
time is the cost of refaults: its "slowdown"), its major faults, the monitor's CPU time (pydamon's
process or the kdamond thread), and whether the workload's data checksums held. A second table
gives the reclaim schemes' own stats where they can be read (pydamon's module status, the kernel
module's parameters files): bytes of regions tried and bytes paged out, and the region count.

Placement: the workloads run on vCPU 0, pydamon's monitor on vCPU 1 (``--monitor-cpu``), the
kernel's kdamond where the scheduler puts it. Under emulation (no KVM) Python costs ~18x the
host's, so the monitor CPU column says more about the guest than about pydamon on hardware.

thp: a child process with a dense hot area (random reads all the time) and a sparse area (one
page written per 256 KiB, then left alone) runs under THP ``never``, THP ``always``, THP
``madvise`` + pydamon's ``thp`` module (defaults: a 2 MiB block is collapsed once hot in 4 of
the last 5 aggregations), and the same module with the rule it had before (``--hot-min-aggrs 1
--hot-window-aggrs 1 --hot-min-coverage 999``: every block inside a region hot in the current
aggregation). Columns: huge-page coverage of the hot area, RSS, AnonHugePages, memory bloat vs.
``never``, and the hot loop's reads per second.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

PAGE = 4096
MiB = 1 << 20
HPAGE = 2 * MiB
KPF_THP = 22
DAMON = "/sys/kernel/mm/damon/admin/kdamonds"
RECLAIM = "/sys/module/damon_reclaim/parameters"
THP = "/sys/kernel/mm/transparent_hugepage/enabled"
MAIN = "import sys; from pydamon.cli.main import main; sys.exit(main(sys.argv[1:]))"


def in_test_guest() -> bool:
    try:
        return "tb.rw=" in open("/proc/cmdline").read() or os.environ.get("PYDAMON_IN_GUEST") == "1"
    except OSError:
        return False


def write(path: str, value: object) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def status_kb(pid: int, key: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def cpu_and_majflt(pid: int) -> tuple[float, int]:
    fields = read(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, int(fields[9])


def rollup_kb(pid: int, key: str) -> int:
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def thp_bytes(pid: int, start: int, end: int) -> int:
    """Bytes of [start, end) in transparent huge pages (pagemap + kpageflags, as root)."""
    total = 0
    first = (start + HPAGE - 1) // HPAGE * HPAGE
    with open(f"/proc/{pid}/pagemap", "rb") as pm, open("/proc/kpageflags", "rb") as kf:
        for addr in range(first, end - HPAGE + 1, HPAGE):
            pm.seek(addr // PAGE * 8)
            entry = struct.unpack("<Q", pm.read(8))[0]
            if entry >> 63 & 1:
                kf.seek((entry & ((1 << 55) - 1)) * 8)
                if struct.unpack("<Q", kf.read(8))[0] >> KPF_THP & 1:
                    total += HPAGE
    return total


def setup_zram(size: int) -> None:
    if "zram" in open("/proc/swaps").read():
        return
    write("/sys/block/zram0/disksize", size)
    subprocess.run(["mkswap", "/dev/zram0"], check=True, capture_output=True)
    subprocess.run(["swapon", "/dev/zram0"], check=True, capture_output=True)


def reset_swap() -> None:
    """Empty the swap between runs so every configuration starts alike."""
    subprocess.run(["swapoff", "-a"], check=False, capture_output=True)
    subprocess.run(["swapon", "/dev/zram0"], check=False, capture_output=True)


# -- the workload program --------------------------------------------------------------------------
class Workload:
    def __init__(self, size: str, tick_ms: int, seed: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pydamon.workload", "hotcold", "--size", size]
            + ["--tick-ms", str(tick_ms), "--seed", str(seed)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self.proc.stdout is not None
        ready = json.loads(self.proc.stdout.readline())
        self.pid: int = ready["pid"]

    def command(self, cmd: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        result: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return result

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


# -- kernel DAMON in the guest ---------------------------------------------------------------------
def biggest_system_ram() -> tuple[int, int]:
    """The biggest top-level System RAM range of /proc/iomem (DAMON_RECLAIM's default region)."""
    best = (0, 0)
    for line in open("/proc/iomem"):
        if line[0] != " " and line.rstrip().endswith(": System RAM"):
            start, end = (int(x, 16) for x in line.split(":")[0].strip().split("-"))
            if end + 1 - start > best[1] - best[0]:
                best = (start, end + 1)
    return best


class KernelVaddrPageout:
    """A sysfs kdamond with one pageout scheme (DAMON_RECLAIM's scheme): on one pid (vaddr), or
    (``pid=None``) on the biggest System RAM range (paddr) with DAMON_RECLAIM's watermarks."""

    def __init__(self, pid: int | None, p: argparse.Namespace) -> None:
        write(f"{DAMON}/nr_kdamonds", 1)
        c = f"{DAMON}/0/contexts"
        write(f"{c}/nr_contexts", 1)
        write(f"{c}/0/operations", "vaddr" if pid is not None else "paddr")
        a = f"{c}/0/monitoring_attrs"
        write(f"{a}/intervals/sample_us", p.sample_us)
        write(f"{a}/intervals/aggr_us", p.aggr_us)
        write(f"{a}/nr_regions/min", 10)
        write(f"{a}/nr_regions/max", 1000)
        write(f"{c}/0/targets/nr_targets", 1)
        if pid is not None:
            write(f"{c}/0/targets/0/pid_target", pid)
        else:
            start, end = biggest_system_ram()
            write(f"{c}/0/targets/0/regions/nr_regions", 1)
            write(f"{c}/0/targets/0/regions/0/start", start)
            write(f"{c}/0/targets/0/regions/0/end", end)
        write(f"{c}/0/schemes/nr_schemes", 1)
        s = f"{c}/0/schemes/0"
        write(f"{s}/action", "pageout")
        ap = f"{s}/access_pattern"
        write(f"{ap}/sz/min", PAGE)
        write(f"{ap}/sz/max", 2**64 - 1)
        write(f"{ap}/nr_accesses/min", 0)
        write(f"{ap}/nr_accesses/max", 0)
        write(f"{ap}/age/min", p.min_age_us // p.aggr_us)
        write(f"{ap}/age/max", 2**32 - 1)
        q = f"{s}/quotas"
        write(f"{q}/ms", p.quota_ms)
        write(f"{q}/bytes", p.quota_sz)
        write(f"{q}/reset_interval_ms", 1000)
        write(f"{q}/weights/sz_permil", 0)
        write(f"{q}/weights/nr_accesses_permil", 0)
        write(f"{q}/weights/age_permil", 1)
        if pid is not None:
            write(f"{s}/watermarks/metric", "none")
        else:  # as the DAMON_RECLAIM row: active while free memory <= 99.9%
            w = f"{s}/watermarks"
            write(f"{w}/metric", "free_mem_rate")
            write(f"{w}/interval_us", 1_000_000)
            write(f"{w}/high", 1000)
            write(f"{w}/mid", 999)
            write(f"{w}/low", 0)
        write(f"{DAMON}/0/state", "on")
        self.pid = int(read(f"{DAMON}/0/pid"))

    def cpu_s(self) -> float:
        return cpu_and_majflt(self.pid)[0]

    def scheme_stats(self) -> dict[str, Any]:
        try:
            write(f"{DAMON}/0/state", "update_schemes_stats")
            st = f"{DAMON}/0/contexts/0/schemes/0/stats"
            return {
                "nr_reclaim_tried_regions": int(read(f"{st}/nr_tried")),
                "bytes_reclaim_tried_regions": int(read(f"{st}/sz_tried")),
                "nr_reclaimed_regions": int(read(f"{st}/nr_applied")),
                "bytes_reclaimed_regions": int(read(f"{st}/sz_applied")),
                "nr_quota_exceeds": int(read(f"{st}/qt_exceeds")),
            }
        except (OSError, ValueError):
            return {}

    def stop(self) -> None:
        write(f"{DAMON}/0/state", "off")


class KernelDamonReclaim:
    """The kernel's DAMON_RECLAIM (paddr, whole guest memory), same parameters."""

    def __init__(self, p: argparse.Namespace) -> None:
        for key, value in (
            ("min_age", p.min_age_us),
            ("quota_ms", p.quota_ms),
            ("quota_sz", p.quota_sz),
            ("quota_reset_interval_ms", 1000),
            ("wmarks_interval", 1_000_000),
            ("wmarks_high", 1000),
            ("wmarks_mid", 999),
            ("wmarks_low", 0),
            ("sample_interval", p.sample_us),
            ("aggr_interval", p.aggr_us),
        ):
            write(f"{RECLAIM}/{key}", value)
        write(f"{RECLAIM}/enabled", "Y")
        deadline = time.monotonic() + 10
        self.pid = -1
        while time.monotonic() < deadline and self.pid <= 0:
            self.pid = int(read(f"{RECLAIM}/kdamond_pid"))
            time.sleep(0.1)

    def cpu_s(self) -> float:
        return cpu_and_majflt(self.pid)[0] if self.pid > 0 else 0.0

    def scheme_stats(self) -> dict[str, Any]:
        keys = ("nr_reclaim_tried_regions", "bytes_reclaim_tried_regions")
        keys += ("nr_reclaimed_regions", "bytes_reclaimed_regions", "nr_quota_exceeds")
        stats: dict[str, Any] = {}
        for key in keys:
            try:
                stats[key] = int(read(f"{RECLAIM}/{key}"))
            except (OSError, ValueError):
                pass
        return stats

    def stop(self) -> None:
        write(f"{RECLAIM}/enabled", "N")


class PydamonModule:
    #: vCPU the pydamon monitor runs on (the workloads run on vCPU 0).
    cpu = 1

    def __init__(self, args: list[str]) -> None:
        cpus = {self.cpu} if self.cpu < (os.cpu_count() or 1) else {0}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", MAIN, "module", "run", *args, "--report-interval", "0"],
            preexec_fn=lambda: os.sched_setaffinity(0, cpus),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYDAMON_RUN_DIR="/tmp/pydamon-bench"),
        )
        self.pid = self.proc.pid
        self.status: dict[str, Any] = {}
        # Python start-up takes tens of seconds under emulation: measure from the first status.
        instance = args[0]
        # (module services keep their files in the run directory's modules/ subdirectory)
        status = f"/tmp/pydamon-bench/modules/{instance}.status.json"
        self.status_file = status
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if json.loads(read(status)).get("pid") == self.pid:
                    break
            except (OSError, ValueError):
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"pydamon module failed: {self.proc.stderr.read()[-300:]}")
            time.sleep(0.2)
        else:
            raise RuntimeError("pydamon module did not start within 300 s")

    def cpu_s(self) -> float:
        return cpu_and_majflt(self.pid)[0]

    def scheme_stats(self) -> dict[str, Any]:
        """The module's stats and region count from its last status (about once a second)."""
        try:
            status = json.loads(read(self.status_file))
        except (OSError, ValueError):
            return {}
        stats: dict[str, Any] = dict(status.get("stats", {}))
        stats["nr_regions"] = sum(c.get("nr_regions", 0) for c in status.get("contexts", []))
        return stats

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=60)
        if self.proc.returncode:
            raise RuntimeError(f"pydamon module failed: {err.strip().splitlines()[-1:]}")


# -- reclaim ---------------------------------------------------------------------------------------
def reclaim_run(name: str, start: Callable[[int], Any] | None, p: argparse.Namespace) -> dict:
    reset_swap()
    wl = Workload(p.size, p.tick_ms, seed=1)
    time.sleep(2)  # let the workload settle (pages populated, first ticks done)
    monitor = start(wl.pid) if start is not None else None
    cpu0, flt0 = cpu_and_majflt(wl.pid)
    monitor_cpu0 = monitor.cpu_s() if monitor is not None else 0.0
    rss = []
    monitor_cpu = 0.0
    t_end = time.monotonic() + p.seconds
    while time.monotonic() < t_end:
        time.sleep(1)
        rss.append(status_kb(wl.pid, "VmRSS"))
        if monitor is not None:
            monitor_cpu = monitor.cpu_s() - monitor_cpu0
    cpu1, flt1 = cpu_and_majflt(wl.pid)
    stats = monitor.scheme_stats() if hasattr(monitor, "scheme_stats") else {}
    if monitor is not None:
        monitor.stop()
    ok = wl.command("verify")["ok"]
    wl.stop()
    return {
        "config": name,
        "rss_avg_mib": sum(rss) / len(rss) / 1024,
        "rss_end_mib": rss[-1] / 1024,
        "workload_cpu_s": cpu1 - cpu0,
        "majflt": flt1 - flt0,
        "monitor_cpu_s": monitor_cpu,
        "data_ok": ok,
        "stats": stats,
    }


def bench_reclaim(p: argparse.Namespace) -> None:
    module_args = [
        "reclaim",
        "--ops", "vaddr",
        "--min-age", f"{p.min_age_us}us", "--quota-ms", str(p.quota_ms),
        "--quota-sz", str(p.quota_sz), "--quota-reset-interval-ms", "1000",
        "--wmarks-high", "1000", "--wmarks-mid", "999", "--wmarks-low", "0",
        "--wmarks-interval", "1s",
        "--sample-interval", f"{p.sample_us}us", "--aggr-interval", f"{p.aggr_us}us",
    ]  # fmt: skip
    paddr_args = [module_args[0], "--ops", "paddr", *module_args[3:]]
    configs: list[tuple[str, Callable[[int], Any] | None]] = [
        ("no reclaim", None),
        ("pydamon reclaim (vaddr)", lambda pid: PydamonModule([*module_args, "--pid", str(pid)])),
        ("kernel DAMON vaddr pageout", lambda pid: KernelVaddrPageout(pid, p)),
        # physical memory, the kernel module's default target: the same parameters, no pid
        ("pydamon reclaim (paddr)", lambda pid: PydamonModule([*paddr_args])),
        # DAMON_RECLAIM's scheme through sysfs: the guest's 6.12 DAMON_RECLAIM drops its scheme
        # and intervals when it commits its parameters (fixed upstream by "mm/damon/reclaim: use
        # parameter context correctly"), so this is the kernel's paddr reclaim actually run
        ("kernel DAMON paddr pageout", lambda pid: KernelVaddrPageout(None, p)),
    ]
    if os.path.isdir(RECLAIM):
        configs.append(("kernel DAMON_RECLAIM (paddr)", lambda pid: KernelDamonReclaim(p)))
    rows = [reclaim_run(name, start, p) for name, start in configs]
    base = rows[0]
    print(
        f"\n## reclaim: hotcold {p.size}, {p.seconds} s, min_age {p.min_age_us / 1e6:g} s, "
        f"quota {p.quota_sz >> 20} MiB + {p.quota_ms} ms per 1 s, "
        f"intervals {p.sample_us / 1000:g}/{p.aggr_us / 1000:g} ms"
    )
    print(
        "| config | RSS avg MiB | RSS end MiB | saved (avg) | workload CPU s | slowdown "
        "| major faults | monitor CPU s | data ok |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        saved = 1 - r["rss_avg_mib"] / base["rss_avg_mib"]
        slow = r["workload_cpu_s"] / base["workload_cpu_s"] - 1 if base["workload_cpu_s"] else 0
        print(
            f"| {r['config']} | {r['rss_avg_mib']:.1f} | {r['rss_end_mib']:.1f} | "
            f"{saved * 100:.1f}% | {r['workload_cpu_s']:.2f} | {slow * 100:+.1f}% | "
            f"{r['majflt']} | {r['monitor_cpu_s']:.2f} | {r['data_ok']} |"
        )
    print(
        "\n| config | regions tried | MiB tried | regions paged out | MiB paged out "
        "| quota exceeds | nr_regions at end |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        st = r["stats"]
        if not st:
            continue
        print(
            f"| {r['config']} | {st.get('nr_reclaim_tried_regions', '-')} | "
            f"{st.get('bytes_reclaim_tried_regions', 0) / MiB:.1f} | "
            f"{st.get('nr_reclaimed_regions', '-')} | "
            f"{st.get('bytes_reclaimed_regions', 0) / MiB:.1f} | "
            f"{st.get('nr_quota_exceeds', '-')} | {st.get('nr_regions', '-')} |"
        )
    sys.stdout.flush()


# -- thp -------------------------------------------------------------------------------------------
def thp_child(hot_mib: int, sparse_mib: int, seconds: float) -> int:
    """Dense hot area read at random pages all the time; sparse area touched once, 1/64 pages."""
    import numpy as np

    hot = mmap.mmap(-1, hot_mib * MiB + HPAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    sparse = mmap.mmap(-1, sparse_mib * MiB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    hot_words = np.frombuffer(hot, dtype=np.uint64)
    hot_words[:: PAGE // 8] = 1  # populate every page
    sparse_words = np.frombuffer(sparse, dtype=np.uint64)
    sparse_words[:: 256 * 1024 // 8] = 1  # one page per 256 KiB
    addr = int(hot_words.ctypes.data)
    areas = {
        "hot": (addr, addr + len(hot)),
        "sparse": (int(sparse_words.ctypes.data), int(sparse_words.ctypes.data) + len(sparse)),
    }
    print(json.dumps({"event": "ready", "pid": os.getpid(), "areas": areas}), flush=True)
    sys.stdin.readline()  # "go": the parent's monitor (if any) is up
    rng = np.random.default_rng(1)
    nr_pages = len(hot) // PAGE
    reads = 0
    sink = 0
    t_end = time.monotonic() + seconds
    # Random page reads over the hot area (TLB-heavy); the count is the speed figure.
    while time.monotonic() < t_end:
        idx = rng.integers(0, nr_pages, 65536) * (PAGE // 8)
        sink += int(hot_words[idx].sum())
        reads += len(idx)
    print(json.dumps({"event": "done", "reads": reads, "seconds": seconds}), flush=True)
    sys.stdin.readline()  # stay alive for the parent's measurements
    return 0 if sink >= 0 else 1


def thp_run(
    name: str, mode: str, use_module: bool, p: argparse.Namespace, module_args: tuple = ()
) -> dict:
    write(THP, mode)
    child = subprocess.Popen(
        [sys.executable, __file__, "--thp-child", str(p.hot_mib), str(p.sparse_mib)]
        + [str(p.seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert child.stdout is not None and child.stdin is not None
    ready = json.loads(child.stdout.readline())
    pid = ready["pid"]
    module = None
    if use_module:
        module = PydamonModule(
            ["thp", "--ops", "vaddr", "--pid", str(pid)]
            + ["--sample-interval", f"{p.sample_us}us", "--aggr-interval", f"{p.aggr_us}us"]
            + list(module_args)
        )
        module_cpu0 = module.cpu_s()
    child.stdin.write("go\n")
    child.stdin.flush()
    done = json.loads(child.stdout.readline())
    hot = ready["areas"]["hot"]
    row = {
        "config": name,
        "hot_thp_coverage": thp_bytes(pid, *hot) / ((hot[1] - hot[0]) // HPAGE * HPAGE),
        "rss_mib": status_kb(pid, "VmRSS") / 1024,
        "anon_huge_mib": rollup_kb(pid, "AnonHugePages") / 1024,
        "reads_per_s": done["reads"] / done["seconds"],
        "monitor_cpu_s": module.cpu_s() - module_cpu0 if module else 0.0,
    }
    if module is not None:
        module.stop()
    child.stdin.write("\n")
    child.stdin.flush()
    child.wait(30)
    return row


def bench_thp(p: argparse.Namespace) -> None:
    old = read(THP).split("[")[1].split("]")[0]
    try:
        rows = [
            thp_run("THP never", "never", False, p),
            thp_run("THP always", "always", False, p),
            thp_run("THP madvise + pydamon thp", "madvise", True, p),
            # the rule before per-block histories: any 2 MiB block inside a region hot in the
            # current aggregation (blocks hot in 1 of the last 1 aggregations, fully covered)
            thp_run(
                "THP madvise + pydamon thp, whole hot regions (old rule)",
                "madvise",
                True,
                p,
                ("--hot-min-aggrs", "1", "--hot-window-aggrs", "1", "--hot-min-coverage", "999"),
            ),
        ]
    finally:
        write(THP, old)
    never = rows[0]
    print(
        f"\n## thp: hot {p.hot_mib} MiB (random reads), sparse {p.sparse_mib} MiB "
        f"(1 page per 256 KiB), {p.seconds} s"
    )
    print(
        "| config | hot huge-page coverage | RSS MiB | AnonHugePages MiB | bloat vs never "
        "| reads/s | speedup vs never | monitor CPU s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['config']} | {r['hot_thp_coverage'] * 100:.0f}% | {r['rss_mib']:.1f} | "
            f"{r['anon_huge_mib']:.0f} | {r['rss_mib'] - never['rss_mib']:+.1f} MiB | "
            f"{r['reads_per_s']:.3g} | {r['reads_per_s'] / never['reads_per_s'] - 1:+.1%} | "
            f"{r['monitor_cpu_s']:.2f} |"
        )
    sys.stdout.flush()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--thp-child":
        return thp_child(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=("reclaim", "thp"))
    ap.add_argument("--size", default="128M", help="reclaim workload size")
    ap.add_argument("--tick-ms", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--min-age-us", type=int, default=6_000_000)
    ap.add_argument("--quota-ms", type=int, default=0)
    ap.add_argument("--quota-sz", type=int, default=128 * MiB)
    ap.add_argument("--monitor-cpu", type=int, default=1, help="vCPU of the pydamon monitor")
    ap.add_argument("--sample-us", type=int, default=100_000)
    ap.add_argument("--aggr-us", type=int, default=2_000_000)
    ap.add_argument("--hot-mib", type=int, default=32)
    ap.add_argument("--sparse-mib", type=int, default=64)
    p = ap.parse_args()
    if not in_test_guest():
        print(
            "bench/modules.py: error: run it inside the test guest (run-in-vm.sh)", file=sys.stderr
        )
        return 2
    if os.geteuid() != 0:
        print("bench/modules.py: error: run as root (the test guest runs commands as root)")
        return 2
    os.sched_setaffinity(0, {0})  # the workloads on vCPU 0; pydamon's monitor on --monitor-cpu
    PydamonModule.cpu = p.monitor_cpu
    print(f"# bench/modules.py in the test guest, kernel {os.uname().release}")
    if p.only in (None, "reclaim"):
        setup_zram(512 * MiB)
        bench_reclaim(p)
    if p.only in (None, "thp"):
        bench_thp(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
