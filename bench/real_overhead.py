"""CPU overhead of pydamon's real-memory monitoring (vaddr) beside the kernel's DAMON.

Guest part (default): boots the test guest (../shared/testbed/run-in-vm.sh, or $PYDAMON_TESTBED)
once and, for each workload size, runs the same workload (``python -m pydamon.workload hotcold``)
monitored (1) by pydamon's vaddr, once per access-check path asked for (``--paths``), and (2) by
the kernel's DAMON vaddr through the guest's sysfs, with the same attributes; the workload and
the pydamon process are pinned on vCPU 0. It prints pydamon's CPU time per region per sample, its
share of one CPU, kdamond's (utime+stime from /proc/PID/stat) and the ratio pydamon/kernel per
region-sample.

pydamon's CPU time is its whole process's (utime+stime of every thread), measured around the
monitoring run in a process of its own per path. Paths (see pydamon.ops._native): ``c`` (the
helper that ``pip install`` compiled; one syscall per run of adjacent entries), ``python``.

Host part (``--host``): what does not need page_idle (region bookkeeping of the core, the
pagemap and kpageflags reads of the sampling addresses) per region-sample, measured natively, so
that the emulation's distortion can be judged. The idle-bitmap reads and writes are left out
there (the host has no page_idle); the guest part has them.

    .venv/bin/python bench/real_overhead.py                 # guest: 256M, 1G, 4G
    .venv/bin/python bench/real_overhead.py --sizes 256M --paths c   # quicker
    .venv/bin/python bench/real_overhead.py -n              # guest booted without pti
    .venv/bin/python bench/real_overhead.py --host
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DAMON = "/sys/kernel/mm/damon/admin/kdamonds"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="256M,1G,4G", help="workload sizes (comma separated)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured time per run")
    p.add_argument("--sample-ms", type=float, default=20.0)
    p.add_argument("--aggr-ms", type=float, default=400.0)
    p.add_argument("--min-regions", type=int, default=10)
    p.add_argument("--max-regions", type=int, default=1000)
    p.add_argument(
        "--paths",
        default="c",
        help="pydamon access-check paths to measure: c, python",
    )
    p.add_argument(
        "--monitor-cpu",
        default="0",
        help="vCPU(s) the pydamon process is pinned on (taskset list; the workload is on 0)",
    )
    p.add_argument(
        "--floor",
        type=int,
        default=2000,
        metavar="N",
        help="also time the bare C access check of N addresses in a loop (0: skip)",
    )
    p.add_argument("--host", action="store_true", help="host part (no page_idle needed)")
    p.add_argument(
        "-n", "--no-pti", action="store_true", help="boot the guest without pti (see README)"
    )
    p.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--one-run", type=int, metavar="PID", help=argparse.SUPPRESS)
    p.add_argument("--one-path", default="c", help=argparse.SUPPRESS)
    p.add_argument("--no-bitmap", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def size_bytes(text: str) -> int:
    from pydamon.workload.program import parse_size

    return parse_size(text)


def start_workload(size: str) -> tuple[subprocess.Popen[str], dict]:
    cmd = [sys.executable, "-m", "pydamon.workload", "hotcold", "--size", size, "--tick-ms", "50"]
    if os.path.exists("/usr/bin/taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


def attrs(args: argparse.Namespace):
    from pydamon.core import Attrs

    return Attrs(
        sample_interval_us=int(args.sample_ms * 1000),
        aggr_interval_us=int(args.aggr_ms * 1000),
        ops_update_interval_us=1_000_000,
        min_nr_regions=args.min_regions,
        max_nr_regions=args.max_regions,
    )


def run_pydamon_in_process(args: argparse.Namespace, pid: int, path: str) -> dict:
    """run_pydamon in a process of its own (pinned on CPU 0), so that its CPU time is whole."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]]
    cmd += ["--one-run", str(pid), "--one-path", path]
    if args.host:
        cmd.append("--no-bitmap")
    if os.path.exists("/usr/bin/taskset"):
        cmd = ["taskset", "-c", args.monitor_cpu, *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(f"real_overhead.py: the pydamon run failed: {out.stderr.strip()[-2000:]}")
    m = json.loads(out.stdout.strip().splitlines()[-1])
    if m["path"] != path:
        print(f"note: asked for {path}, got {m['path']} ({m['why']})", file=sys.stderr)
    m["path"] = path
    return m


def run_pydamon(args: argparse.Namespace, pid: int, phys_factory=None) -> dict:
    from pydamon.core import Context, Target
    from pydamon.ops import _native, vaddr
    from pydamon.ops.probe import access_check_path

    if args.one_path not in ("c", "python"):
        sys.exit(f"real_overhead.py: unknown access-check path {args.one_path!r}: c or python")
    ops = vaddr.VaddrOperations(native=args.one_path == "c")
    ctx = Context(ops, [Target(pid=pid)], attrs(args), seed=1)
    # Steady state only, as for kdamond (measured once it runs): CPU time and region-samples
    # from the end of the first aggregation on. Before it come one-time costs (imports, the
    # C helper's load, the first maps read), seconds under emulation.
    measured: dict[str, float] = {"region_samples": 0, "aggregations": 0}
    start: dict[str, float] = {}

    def count(c) -> None:  # regions of every sample of the aggregation just ended
        if not start:
            t = os.times()
            start.update(
                cpu_s=t.user + t.system,
                loop_s=time.thread_time(),
                wall_s=time.monotonic(),
                samples=c.passed_sample_intervals,
            )
            return
        measured["region_samples"] += c.nr_regions * c.attrs.max_nr_accesses
        measured["aggregations"] += 1
        measured["loop_s"] = time.thread_time() - start["loop_s"]

    ctx.add_callback("after_aggregation", count)
    # the access checks themselves (the Sampler's two calls per sample; C or Python)
    checks = [0.0]
    # (a checkout from before the Sampler has no such split: its checks column reads 0)
    sampler = getattr(_native, "Sampler", None)
    for name in ("pick_prepare", "check_update") if sampler is not None else ():
        method = getattr(sampler, name)

        def timed(*a, _method=method, **k):
            if not start:
                return _method(*a, **k)
            t0 = time.thread_time()
            try:
                return _method(*a, **k)
            finally:
                checks[0] += time.thread_time() - t0

        setattr(sampler, name, timed)
    if phys_factory is not None:
        vaddr.require = lambda name: None  # host part: page_idle is left out on purpose
        vaddr.pagefacts.PhysPages = phys_factory
    # the whole process: every thread
    ctx.run(duration_us=int(args.seconds * 1e6))
    end = os.times()
    # system calls per region-sample of the access checks, over the whole run (a checkout from
    # before the counters has none: nan)
    states = [getattr(t.ops_private, "sampler", None) for t in ctx.targets]
    counts = [s.syscalls_per_region_sample() for s in states if hasattr(s, "stats")]
    syscalls = counts[0] if counts and counts[0] is not None else float("nan")
    if not measured["aggregations"]:
        sys.exit("real_overhead.py: pydamon made fewer than two aggregations; use --seconds")
    return {
        "path": access_check_path().name if ops.native else "python",
        "why": access_check_path().why,
        "cpu_s": (end.user + end.system) - start["cpu_s"],
        "loop_thread_cpu_s": measured["loop_s"],
        "checks_cpu_s": checks[0],
        "wall_s": time.monotonic() - start["wall_s"],
        "region_samples": measured["region_samples"],
        "samples": ctx.passed_sample_intervals - start["samples"],
        "syscalls_per_rs": syscalls,
        "regions": measured["region_samples"]
        / measured["aggregations"]
        / ctx.attrs.max_nr_accesses,
    }


def floor_us(args: argparse.Namespace, pid: int, info: dict) -> float:
    """CPU µs per address of the bare C access check (prepare + check, no sleep, no Python per
    address), in a tight loop on up to ``--floor`` random pages of the workload, at most one per
    64-page idle-bitmap word (as regions' sampling addresses mostly are): the system calls a
    user-space page_idle monitor cannot avoid, with warm caches; a floor under pydamon's per
    region-sample."""
    import numpy as np

    from pydamon.ops import _native, pagefacts

    os.sched_setaffinity(0, {int(c) for c in args.monitor_cpu.split(",")})
    rng = np.random.default_rng(1)
    pages = np.concatenate(
        [np.arange(a["start"], a["end"], 4096, dtype=np.int64) for a in info["areas"]]
    )
    words = np.unique(pages >> 18)  # 64 pages of 4 KiB: one bitmap word (by virtual address)
    chosen = rng.choice(words, size=min(args.floor, len(words)), replace=False)
    addrs = np.sort((chosen << 18) + rng.integers(0, 64, len(chosen)) * 4096)
    addrs = addrs[np.isin(addrs, pages)]
    phys, pagemap = pagefacts.PhysPages(), pagefacts.Pagemap(pid)
    try:
        rounds = 20
        t0 = time.thread_time()
        for _ in range(rounds):
            pfns = _native.prepare(phys, pagemap, addrs)
            _native.check(phys, pfns)
        return (time.thread_time() - t0) * 1e6 / (rounds * len(addrs))
    finally:
        pagemap.close()
        phys.close()


# -- kernel DAMON (guest only) ---------------------------------------------------------------


def w(path: str, value: object) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def r(path: str) -> str:
    for _ in range(50):
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError as e:  # EBUSY: DAMON's sysfs lock is held a moment (a state command)
            if e.errno != errno.EBUSY:
                raise
            time.sleep(0.1)
    raise OSError(errno.EBUSY, f"{path} stayed busy")


def run_kernel_damon(args: argparse.Namespace, pid: int) -> dict[str, float]:
    a = attrs(args)
    w(f"{DAMON}/nr_kdamonds", 1)
    kd = f"{DAMON}/0"
    w(f"{kd}/contexts/nr_contexts", 1)
    c = f"{kd}/contexts/0"
    w(f"{c}/operations", "vaddr")
    w(f"{c}/monitoring_attrs/intervals/sample_us", a.sample_interval_us)
    w(f"{c}/monitoring_attrs/intervals/aggr_us", a.aggr_interval_us)
    w(f"{c}/monitoring_attrs/intervals/update_us", a.ops_update_interval_us)
    w(f"{c}/monitoring_attrs/nr_regions/min", a.min_nr_regions)
    w(f"{c}/monitoring_attrs/nr_regions/max", a.max_nr_regions)
    w(f"{c}/targets/nr_targets", 1)
    w(f"{c}/targets/0/pid_target", pid)
    # a stat scheme matching every region, to count the regions (tried_regions)
    w(f"{c}/schemes/nr_schemes", 1)
    s = f"{c}/schemes/0"
    w(f"{s}/action", "stat")
    w(f"{s}/access_pattern/sz/max", 2**63 - 1)
    w(f"{s}/access_pattern/nr_accesses/max", 2**31)
    w(f"{s}/access_pattern/age/max", 2**31)
    w(f"{kd}/state", "on")
    kpid = int(r(f"{kd}/pid"))

    def cpu() -> float:
        fields = r(f"/proc/{kpid}/stat").rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    cpu0, t0 = cpu(), time.monotonic()
    counts = []
    while time.monotonic() - t0 < args.seconds:
        time.sleep(min(2.0, args.seconds / 5))
        w(f"{kd}/state", "update_schemes_tried_regions")
        counts.append(len(os.listdir(f"{s}/tried_regions")) - 1)  # minus total_bytes
    cpu1, wall = cpu(), time.monotonic() - t0
    w(f"{kd}/state", "off")
    regions = sum(counts) / max(len(counts), 1)
    samples = wall * 1e6 / a.sample_interval_us
    return {
        "cpu_s": cpu1 - cpu0,
        "wall_s": wall,
        "region_samples": regions * samples,
        "samples": samples,
        "regions": regions,
    }


def per_rs_us(m: dict[str, float]) -> float:
    return m["cpu_s"] * 1e6 / max(m["region_samples"], 1)


def in_guest(args: argparse.Namespace) -> None:
    # Never touch a kernel DAMON someone else uses (the host runs one): the guest starts at 0.
    if not os.path.isdir(DAMON) or r(f"{DAMON}/nr_kdamonds") != "0":
        sys.exit("real_overhead.py: kernel DAMON sysfs absent or in use; run without --in-guest")
    rows = []
    for size in args.sizes.split(","):
        proc, info = start_workload(size)
        try:
            time.sleep(2)
            pys = [(path, run_pydamon_in_process(args, proc.pid, path)) for path in paths(args)]
            kern = run_kernel_damon(args, proc.pid)
            floor = floor_us(args, proc.pid, info) if args.floor else float("nan")
        finally:
            proc.kill()
            proc.wait()
        for path, py in pys:
            rows.append((size, path, py, kern, floor))
            print(
                json.dumps(
                    {"size": size, "path": path, "pydamon": py, "kernel": kern, "floor": floor}
                )
            )
        sys.stdout.flush()
    print()
    print(
        f"guest (qemu TCG, pti {'off' if args.no_pti else 'on'}), hotcold workload, sample "
        f"{args.sample_ms:g} ms, aggr {args.aggr_ms:g} ms, regions "
        f"{args.min_regions}..{args.max_regions}, {args.seconds:g} s each, pydamon on vCPU "
        f"{args.monitor_cpu}"
    )
    hdr = (
        f"{'size':>6} {'path':>12} {'samples py/k':>13} {'regions py/k':>13} {'py us/rs':>9} "
        f"{'checks us/rs':>12} {'sc/rs':>6} {'py %CPU':>8} {'kern us/rs':>11} {'kern %CPU':>9} "
        f"{'ratio':>6} "
        f"{'floor us':>9} {'floor/kern':>10}"
    )
    print(hdr)
    for size, path, py, kern, floor in rows:
        kern_rs = max(per_rs_us(kern), 1e-9)
        print(
            f"{size:>6} {path:>12} {py['samples']:>6.0f}/{kern['samples']:<6.0f} "
            f"{py['regions']:>6.0f}/{kern['regions']:<6.0f} "
            f"{per_rs_us(py):>9.1f} "
            f"{py['checks_cpu_s'] * 1e6 / max(py['region_samples'], 1):>12.1f} "
            f"{py.get('syscalls_per_rs', float('nan')):>6.2f} "
            f"{100 * py['cpu_s'] / py['wall_s']:>8.1f} "
            f"{per_rs_us(kern):>11.1f} {100 * kern['cpu_s'] / kern['wall_s']:>9.1f} "
            f"{per_rs_us(py) / kern_rs:>6.1f} {floor:>9.1f} {floor / kern_rs:>10.1f}"
        )


def paths(args: argparse.Namespace) -> list[str]:
    return [p.strip() for p in args.paths.split(",") if p.strip()]


def no_bitmap_phys():
    """PhysPages without the idle bitmap (absent on the host): bitmap I/O left out."""
    from pydamon.ops import _native, pagefacts

    class NoBitmap(pagefacts.PhysPages):
        """kpageflags reads as usual; the idle bitmap (absent here) left out."""

        def __init__(self) -> None:
            self.kpageflags_fd = os.open(pagefacts.KPAGEFLAGS, os.O_RDONLY)
            self.bitmap_fd = -1

        def mark_idle(self, pfns) -> None:
            pass

        def idle(self, pfns) -> list[bool]:
            return [True] * len(pfns)

    # the C path: the pagemap and kpageflags reads as usual, no bitmap I/O
    lib = _native.load()
    if lib is not None:

        class NoBitmapLib:
            def __getattr__(self, name):
                return getattr(lib, name)

            @staticmethod
            def pydamon_check(fd, kpf, pfns, n, accessed, stats) -> int:
                ctypes.memset(accessed, 0, n)
                return 0

            @staticmethod
            def pydamon_check_update(fd, kpf, pfns, n, accessed, nr, bp, last, window, max_nr, st):
                ctypes.memset(accessed, 0, n)
                top = lib.pydamon_update_rate(n, accessed, nr, bp, last, window)
                ctypes.c_int64.from_address(max_nr).value = top
                return 0

        _native.load = lambda: NoBitmapLib()  # type: ignore[assignment]

    return NoBitmap


def host(args: argparse.Namespace) -> None:
    print(
        f"host, hotcold workload, sample {args.sample_ms:g} ms, regions "
        f"{args.min_regions}..{args.max_regions}: bookkeeping + pagemap + kpageflags reads"
    )
    print(
        f"{'size':>6} {'path':>12} {'regions':>8} {'samples':>8} {'us/region-sample':>17} "
        f"{'%CPU':>6} {'syscalls/rs':>12}"
    )
    for size in args.sizes.split(","):
        proc, _ = start_workload(size)
        try:
            for path in paths(args):
                m = run_pydamon_in_process(args, proc.pid, path)
                print(
                    f"{size:>6} {path:>12} {m['regions']:>8.0f} {m['samples']:>8} "
                    f"{per_rs_us(m):>17.2f} {100 * m['cpu_s'] / m['wall_s']:>6.1f} "
                    f"{m.get('syscalls_per_rs', float('nan')):>12.2f}",
                    flush=True,
                )
        finally:
            proc.kill()
            proc.wait()


def main() -> int:
    args = parse_args()
    if args.one_run is not None:
        phys_factory = no_bitmap_phys() if args.no_bitmap else None
        print(json.dumps(run_pydamon(args, args.one_run, phys_factory)))
        return 0
    if args.host:
        host(args)
        return 0
    if args.in_guest:
        in_guest(args)
        return 0
    tb = Path(os.environ.get("PYDAMON_TESTBED", REPO.parent / "shared" / "testbed"))
    biggest = max(size_bytes(s) for s in args.sizes.split(","))
    mem_mib = biggest // (1 << 20) + 1536
    cmd = [
        "bash",
        str(tb / "run-in-vm.sh"),
        "-m",
        f"{mem_mib}M",
        "-c",
        "2",
        "-w",
        "none",
        "-t",
        "3600",
        *(["-n"] if args.no_pti else []),
        "-a",
        "nopcid",  # as the guest tests: Accessed bits reappear after each kernel entry
        # a checkout other than the installed one (PYTHONPATH=its src) is measured as asked
        *(["-e", f"PYTHONPATH={os.environ['PYTHONPATH']}"] if "PYTHONPATH" in os.environ else []),
        "--",
        sys.executable,
        str(Path(__file__).resolve()),
        "--in-guest",
        *sys.argv[1:],
    ]
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
