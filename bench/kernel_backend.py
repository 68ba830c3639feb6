"""CPU of the kernel backend against the user-space engine, damo and kdamond alone (issue 11).

Boots the test guest once (../shared/testbed/run-in-vm.sh, or $PYDAMON_TESTBED) and, on one
``python -m pydamon.workload hotcold`` process, with the same attrs, measures in turn:

1. ``pydamon record --backend kernel``: the kdamond (utime+stime of /proc/<kdamond pid>/stat,
   the pid from the sysfs kdamond dir) and pydamon's reading process (its /proc/<pid>/stat);
2. ``pydamon record --backend user --cpu-budget 0`` (not capped);
3. ``damo record`` (damo's process tree, perf included, plus its kdamond);
4. a kdamond alone (pydamon's sysfs writer, nothing reading the results): the baseline.

CPU is measured over a steady window (``--warmup`` s after the kdamond / the first snapshot,
then ``--seconds`` s), as % of one vCPU. The workload and every monitor (the kdamonds too) are
pinned on vCPU ``--cpu``. "snaps" are the snapshots the record holds over the whole run;
"samples/aggr" is what the record tells (user engine), else the largest nr_accesses seen (a
lower bound; kernel and damo records do not say).

    PYDAMON_TESTBED=/work/shared/testbed .venv/bin/python bench/kernel_backend.py
    .venv/bin/python bench/kernel_backend.py --size 256M --seconds 30 --repeat 2

Results: see the bottom of this docstring (filled in from the run in the report).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ADMIN = "/sys/kernel/mm/damon/admin"
TICK = os.sysconf("SC_CLK_TCK")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="256M", help="workload size")
    p.add_argument("--seconds", type=float, default=30.0, help="measured window per run")
    p.add_argument("--warmup", type=float, default=4.0, help="seconds before the window")
    p.add_argument("--sample", default="50ms")
    p.add_argument("--aggr", default="1s")
    p.add_argument("--min-regions", type=int, default=10)
    p.add_argument("--max-regions", type=int, default=1000)
    p.add_argument("--cpu", default="0", help="vCPU the workload and monitors are pinned on")
    p.add_argument("--repeat", type=int, default=1, help="rounds of the four runs")
    p.add_argument("--only", default="kernel,user,damo,alone", help="runs to do")
    p.add_argument("--profile", metavar="DIR", help="cProfile the kernel backend's reader")
    p.add_argument("-n", "--no-pti", action="store_true", help="boot the guest without pti")
    p.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def proc_cpu_s(pid: int, children: bool = False) -> float:
    """utime+stime (and the waited-for children's, if asked) of a process or thread."""
    try:
        f = read(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    ticks = int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if children else 0)
    return ticks / TICK


def tree_cpu_s(root: int) -> float:
    """CPU of a process, its waited-for children and its live descendants."""
    parent: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                parent[int(name)] = int(read(f"/proc/{name}/stat").rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                pass
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, pp in parent.items():
            if pp in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sum(proc_cpu_s(p, children=True) for p in tree)


def kdamond_pids() -> list[int]:
    try:
        nr = int(read(f"{ADMIN}/kdamonds/nr_kdamonds"))
    except OSError:
        return []
    pids = []
    for k in range(nr):
        try:
            pid = int(read(f"{ADMIN}/kdamonds/{k}/pid"))
        except (OSError, ValueError):
            continue
        if pid > 0:
            pids.append(pid)
    return pids


def wait_kdamond(timeout_s: float = 120.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = kdamond_pids()
        if pids:
            return pids[0]
        time.sleep(0.2)
    sys.exit("kernel_backend.py: no kdamond started")


def pin(pid: int, cpu: str) -> None:
    try:
        os.sched_setaffinity(pid, {int(c) for c in cpu.split(",")})
    except OSError:
        pass  # a kthread that refuses: measured where it runs


def damo_cmd() -> list[str]:
    run = "import sys; from damo.damo import main; sys.argv[0] = 'damo'; sys.exit(main())"
    return [sys.executable, "-c", run]


def attrs_args(args: argparse.Namespace) -> list[str]:
    return ["-s", args.sample, "-a", args.aggr, "-n", str(args.min_regions)] + [
        "-m",
        str(args.max_regions),
    ]


def measure_command(
    args: argparse.Namespace, cmd: list[str], kernel: bool, out: str
) -> dict[str, float]:
    """Run a monitoring command; CPU of it (and of its kdamond) over the window."""
    proc = subprocess.Popen(
        ["taskset", "-c", args.cpu, *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        kpid = wait_kdamond() if kernel else None
        if kpid is not None:
            pin(kpid, args.cpu)
        else:
            deadline = time.monotonic() + 120
            while not os.path.exists(out) or os.path.getsize(out) < 4096:
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        time.sleep(args.warmup)
        k0 = proc_cpu_s(kpid) if kpid else 0.0
        r0, t0 = tree_cpu_s(proc.pid), time.monotonic()
        time.sleep(args.seconds)
        k1 = proc_cpu_s(kpid) if kpid else 0.0
        r1, wall = tree_cpu_s(proc.pid), time.monotonic() - t0
    finally:
        proc.send_signal(2)
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    if proc.returncode not in (0, -2, 130):
        print(f"note: {cmd[:4]} exited {proc.returncode}: {err.decode()[-500:]}", file=sys.stderr)
    return {"kdamond": (k1 - k0) / wall, "reader": (r1 - r0) / wall} | record_facts(out)


def record_facts(out: str) -> dict[str, float]:
    from pydamon.record import read_record

    try:
        rec = read_record(out)
    except Exception as err:  # a record damo left in its own format variant
        print(f"note: cannot read {out}: {err}", file=sys.stderr)
        return {"snaps": float("nan"), "samples": float("nan"), "known": 0}
    snaps = [s for s in rec.snapshots if s.target_index == 0]
    known = [s.nr_samples for s in snaps if s.nr_samples >= 0]
    if known:
        return {"snaps": len(snaps), "samples": sum(known) / len(known), "known": 1}
    top = max((int(s.nr_accesses.max()) for s in snaps if s.nr_regions), default=0)
    return {"snaps": len(snaps), "samples": top, "known": 0}


def run_alone(args: argparse.Namespace, pid: int) -> dict[str, float]:
    from pydamon.core import Attrs, Target
    from pydamon.kernel import DamonSysfs
    from pydamon.kernel.capabilities import probe
    from pydamon.kernel.config import ContextConfig
    from pydamon.units import parse_duration

    attrs = Attrs(
        sample_interval_us=parse_duration(args.sample),
        aggr_interval_us=parse_duration(args.aggr),
        ops_update_interval_us=1_000_000,
        min_nr_regions=args.min_regions,
        max_nr_regions=args.max_regions,
    )
    sysfs = DamonSysfs(ADMIN)
    caps = probe(ADMIN, sysfs.fs.io)
    k = sysfs.add_kdamonds(1)[0]
    sysfs.write(k, [ContextConfig(ops="vaddr", attrs=attrs, targets=[Target(pid=pid)])], caps)
    sysfs.start(k)
    try:
        kpid = sysfs.pid(k)
        pin(kpid, args.cpu)
        time.sleep(args.warmup)
        k0, t0 = proc_cpu_s(kpid), time.monotonic()
        time.sleep(args.seconds)
        k1, wall = proc_cpu_s(kpid), time.monotonic() - t0
    finally:
        sysfs.stop(k)
        sysfs.fs.write("kdamonds/nr_kdamonds", 0)
    return {"kdamond": (k1 - k0) / wall, "reader": 0.0, "snaps": float("nan"), "samples": 0}


def one_run(args: argparse.Namespace, what: str, pid: int, tmp: str, i: int) -> dict[str, float]:
    out = os.path.join(tmp, f"{what}{i}.data")
    py = [sys.executable, "-m", "pydamon.cli.main", "record", "-p", str(pid), *attrs_args(args)]
    py += ["-q", "--timeout", str(3600), "-o", out]
    if what == "kernel":
        cmd = py + ["--backend", "kernel"]
        if args.profile:
            prof = os.path.join(args.profile, f"reader{i}.prof")
            cmd = [sys.executable, "-m", "cProfile", "-o", prof, *cmd[1:]]
            cmd[4:6] = ["-m", "pydamon.cli.main"]
        return measure_command(args, cmd, True, out)
    if what == "user":
        return measure_command(args, py + ["--backend", "user", "--cpu-budget", "0"], False, out)
    if what == "damo":
        cmd = [*damo_cmd(), "record", *attrs_args(args), "-o", out, str(pid)]
        return measure_command(args, cmd, True, out)
    return run_alone(args, pid)


def in_guest(args: argparse.Namespace) -> None:
    if int(read(f"{ADMIN}/kdamonds/nr_kdamonds")):
        sys.exit("kernel_backend.py: the guest's DAMON already has kdamonds")
    with open("/proc/sys/kernel/randomize_va_space", "w") as f:
        f.write("0")
    # enabling a trace event with record-cmd on live-patches the scheduler's tracepoints, which
    # crashes the TCG guest now and then (docs/testing.md)
    with open("/sys/kernel/tracing/options/record-cmd", "w") as f:
        f.write("0")
    wl = [sys.executable, "-m", "pydamon.workload", "hotcold", "--size", args.size]
    wl = ["taskset", "-c", args.cpu, *wl, "--tick-ms", "50"]
    work = subprocess.Popen(wl, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert work.stdout is not None
    pid = json.loads(work.stdout.readline())["pid"]
    rows: list[tuple[str, dict[str, float]]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.repeat):
                for what in args.only.split(","):
                    m = one_run(args, what, pid, tmp, i)
                    print(json.dumps({"what": what, "round": i, **m}), flush=True)
                    rows.append((what, m))
    finally:
        work.kill()
        work.wait()
    alone = [m["kdamond"] for w, m in rows if w == "alone"]
    base = sum(alone) / len(alone) if alone else float("nan")
    print()
    print(
        f"guest Linux {os.uname().release}, {os.cpu_count()} vCPUs (qemu TCG, pti "
        f"{'off' if args.no_pti else 'on'}), hotcold {args.size}, sample {args.sample}, aggr "
        f"{args.aggr}, regions {args.min_regions}..{args.max_regions}, {args.seconds:g} s window, "
        f"all on vCPU {args.cpu}"
    )
    print(
        f"{'what':<28} {'kdamond %':>9} {'reader %':>9} {'total %':>8} {'total/alone':>11} "
        f"{'snaps':>6} {'samples/aggr':>12}"
    )
    names = {
        "kernel": "pydamon --backend kernel",
        "user": "pydamon --backend user",
        "damo": "damo record",
        "alone": "kdamond alone",
    }
    for what, m in rows:
        total = m["kdamond"] + m["reader"]
        samples = f"{m['samples']:.1f}" if m.get("known") else f">={m['samples']:.0f}"
        print(
            f"{names[what]:<28} {100 * m['kdamond']:>9.2f} {100 * m['reader']:>9.2f} "
            f"{100 * total:>8.2f} {total / base:>11.2f} {m['snaps']:>6.0f} "
            f"{samples if what != 'alone' else '-':>12}"
        )


def main() -> int:
    args = parse_args()
    if args.in_guest:
        in_guest(args)
        return 0
    tb = Path(os.environ.get("PYDAMON_TESTBED", REPO.parent / "shared" / "testbed"))
    if not (tb / "run-in-vm.sh").is_file():
        tb = Path("/work/shared/testbed")
    writable = args.profile or "none"
    cmd = ["bash", str(tb / "run-in-vm.sh"), "-m", "2G", "-c", "2", "-w", writable]
    cmd += ["-t", "3600", *(["-n"] if args.no_pti else []), "-a", "nopcid"]
    if "PYTHONPATH" in os.environ:
        cmd += ["-e", f"PYTHONPATH={os.environ['PYTHONPATH']}"]
    cmd += ["--", sys.executable, str(Path(__file__).resolve()), "--in-guest", *sys.argv[1:]]
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
