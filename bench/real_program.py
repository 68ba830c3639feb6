"""A real server (memcached) under a fixed GET rate, monitored by the kernel's DAMON and pydamon.

Boots the test guest once (../shared/testbed/run-in-vm.sh, or $PYDAMON_TESTBED; the guest sees
the host's files, so memcached is the host's /usr/bin/memcached, started only inside the guest)
and, in that one boot: starts ``memcached -u root -m 256 -p 11211 -U 0 -t 2`` pinned on vCPU 0,
SETs ``--keys`` values of 4 KB, finds the hot values' pages (scans /proc/PID/mem once for the hot
values' marker bytes), then per row runs a GET load at a fixed rate (``--rate``; 1% of the keys
take 90% of the GETs) from a client of its own (plain sockets, text protocol, pinned on vCPU 1)
for ``--seconds``, with the monitor (pinned on vCPU 0 beside memcached) started before it:

- ``unmonitored``: the baseline request rate;
- ``kernel``: ``pydamon record --backend kernel`` (kdamond CPU from /proc/<kdamond pid>/stat);
- ``old main``: the user-space engine before issue 13 (``--old-main CHECKOUT``, default
  ../oldmain, a worktree of f3829c2 with its own .venv; no --cpu-budget there);
- ``main b=0`` / ``b=5`` / ``b=20``: this checkout, ``--backend user --cpu-budget N``.

Columns: monitor CPU (% of one vCPU, over the load window), CPU per region-sample (µs: the window's
CPU / the region-samples done in it), system calls per region-sample (n/a: ``record`` writes
none; ``pydamon status`` of a ``start``ed monitor shows them), samples per aggregation achieved
(the record's per-snapshot nr_samples; old main and kernel: not recorded, "~" marks the count
implied by the asked intervals), the aggregation interval the record claims (mean snapshot
length in the record) beside the one achieved (the monitor's wall time / snapshots), the
achieved GET/s, and the share of hot-value pages whose region reads above the median nr_accesses
in the last 3 snapshots ("hot found").

    .venv/bin/python bench/real_program.py                        # all rows, 30 s each
    .venv/bin/python bench/real_program.py --rows unmonitored,main5 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DAMON = "/sys/kernel/mm/damon/admin/kdamonds"
VALUE_SIZE = 4096
HOT_MARK = b"HOTVALUE"
ROWS = ("unmonitored", "kernel", "oldmain", "main0", "main5", "main20")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=32000, help="values of 4 KB to SET")
    p.add_argument("--rate", type=float, default=1000.0, help="GETs per second asked")
    p.add_argument("--seconds", type=float, default=30.0, help="load time per row")
    p.add_argument("--warmup", type=float, default=6.0, help="monitor time before the load")
    p.add_argument("--attrs", default="-s 100ms -a 2s -u 1s -n 100 -m 1000")
    p.add_argument("--rows", default=",".join(ROWS), help="rows to run: " + ",".join(ROWS))
    p.add_argument("--old-main", default=str(REPO.parent / "oldmain"))
    p.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def key(i: int) -> bytes:
    return b"k%06d" % i


def value(i: int, hot: bool) -> bytes:
    head = (HOT_MARK if hot else b"coldval_") + b"%06d:" % i
    return head + b"x" * (VALUE_SIZE - len(head))


def connect() -> socket.socket:
    for _ in range(100):
        try:
            return socket.create_connection(("127.0.0.1", 11211))
        except OSError:
            time.sleep(0.1)
    raise SystemExit("memcached does not answer on 127.0.0.1:11211")


def load_values(nr_keys: int, nr_hot: int) -> None:
    s = connect()
    batch = []
    for i in range(nr_keys):
        v = value(i, i < nr_hot)
        batch.append(b"set %s 0 0 %d noreply\r\n%s\r\n" % (key(i), len(v), v))
        if len(batch) == 64 or i == nr_keys - 1:
            s.sendall(b"".join(batch))
            batch = []
    s.sendall(b"get %s\r\n" % key(0))  # a reply: every SET before it was handled
    buf = b""
    while not buf.endswith(b"END\r\n"):
        buf += s.recv(65536)
    s.close()


def run_load(nr_keys: int, nr_hot: int, rate: float, seconds: float) -> dict[str, float]:
    """GETs at a fixed rate (open loop: late requests are sent at once, never skipped)."""
    rng = random.Random(1)
    s = connect()
    done, misses = 0, 0
    start = time.monotonic()
    while True:
        due = start + done / rate
        now = time.monotonic()
        if now - start >= seconds:
            break
        if due > now:
            time.sleep(due - now)
        i = rng.randrange(nr_hot) if rng.random() < 0.9 else rng.randrange(nr_hot, nr_keys)
        s.sendall(b"get %s\r\n" % key(i))
        buf = b""
        while not buf.endswith(b"END\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("memcached closed the connection")
            buf += chunk
        misses += VALUE_SIZE > len(buf)
        done += 1
    elapsed = time.monotonic() - start
    return {"gets": done, "get_per_s": done / elapsed, "misses": misses}


def hot_pages(pid: int) -> list[int]:
    """Page addresses holding the hot values (scanning memcached's writable mappings once)."""
    pages: set[int] = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if "rw" not in fields[1] or len(fields) > 5 and fields[5].startswith("["):
                continue
            for off in range(lo, hi, 1 << 20):
                try:
                    mem.seek(off)
                    data = mem.read(min(1 << 20, hi - off))
                except OSError:
                    continue
                for m in re.finditer(HOT_MARK, data):
                    pages.add((off + m.start()) & ~4095)
    return sorted(pages)


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kdamond_pids() -> list[int]:
    out = []
    for d in Path(DAMON).glob("[0-9]*"):
        try:
            out.append(int((d / "pid").read_text()))
        except (OSError, ValueError):
            pass
    return [p for p in out if p > 0]


def found_share(rec_path: str, pages: list[int]) -> float | None:
    """Share of hot pages whose region reads above the median nr_accesses (last 3 snapshots)."""
    import numpy as np

    from pydamon.record import read_record

    rec = read_record(rec_path)
    n = rec.nr_snapshots
    if n == 0 or not pages:
        return None
    hits, total = 0, 0
    offs = rec.region_offsets
    addr = np.array(pages, dtype=np.int64)
    for i in range(max(0, n - 3), n):
        lo, hi = int(offs[i]), int(offs[i + 1])
        starts, ends = rec.starts[lo:hi], rec.ends[lo:hi]
        acc = rec.nr_accesses[lo:hi]
        median = float(np.median(acc))
        idx = np.searchsorted(starts, addr, side="right") - 1
        ok = (idx >= 0) & (addr < ends[np.maximum(idx, 0)])
        hits += int(np.sum(acc[idx[ok]] > median))
        total += len(addr)
    return hits / total


def record_figures(rec_path: str, wall_s: float | None) -> dict[str, object]:
    import numpy as np

    from pydamon.record import read_record

    rec = read_record(rec_path)
    n = rec.nr_snapshots
    if n < 2:
        return {"snapshots": n}
    claimed = float(np.mean(rec.snap_end_us - rec.snap_start_us)) / 1e6
    samples = rec.snap_nr_samples
    known = samples >= 0
    return {
        "snapshots": n,
        "mean_regions": float(np.mean(rec.nr_regions)),
        "claimed_aggr_s": claimed,
        "achieved_aggr_s": wall_s / n if wall_s else None,
        "samples_per_aggr": float(np.mean(samples[known])) if known.any() else None,
        "asked_samples": float(np.mean(rec.snap_aggr_us // np.maximum(rec.snap_sample_us, 1))),
        "sample_s": float(np.mean(rec.snap_sample_us)) / 1e6,
    }


def one_row(args: argparse.Namespace, row: str, mc_pid: int, pages: list[int]) -> dict:
    attrs = args.attrs.split()
    out = f"/tmp/realprog-{row}.data"
    mon_cmd: list[str] | None = None
    if row == "kernel":
        mon_cmd = [sys.executable, "-m", "pydamon.cli.main", "record", "--backend", "kernel"]
    elif row == "oldmain":
        mon_cmd = [f"{args.old_main}/.venv/bin/python", "-m", "pydamon.cli.main", "record"]
    elif row.startswith("main"):
        budget = row[4:]
        mon_cmd = [sys.executable, "-m", "pydamon.cli.main", "record", "--backend", "user"]
        mon_cmd += ["--cpu-budget", budget]
    mon = None
    if mon_cmd is not None:
        mon_cmd += ["-p", str(mc_pid), *attrs, "-o", out, "--force", "-q", "--json"]
        env = dict(os.environ)
        if row == "oldmain":
            env.pop("PYTHONPATH", None)
            env.pop("VIRTUAL_ENV", None)
        mon = subprocess.Popen(
            ["taskset", "-c", "0", *mon_cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env,
        )  # fmt: skip
        time.sleep(args.warmup)
        if mon.poll() is not None:
            return {"row": row, "error": mon.stderr.read().strip()[-300:]}
    cpu_pids = []
    if row == "kernel":
        cpu_pids = kdamond_pids()
    elif mon is not None:
        cpu_pids = [mon.pid]
    cpu0 = sum(proc_cpu_s(p) for p in cpu_pids)
    t0 = time.monotonic()
    load = subprocess.run(
        ["taskset", "-c", "1", sys.executable, __file__, "--load", "--keys", str(args.keys),
         "--rate", str(args.rate), "--seconds", str(args.seconds)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    window = time.monotonic() - t0
    cpu = sum(proc_cpu_s(p) for p in cpu_pids) - cpu0
    res: dict = {"row": row, **json.loads(load.stdout)}
    if mon is None:
        return res
    mon.send_signal(signal.SIGINT)
    stdout, stderr = mon.communicate(timeout=120)
    try:
        summary = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {**res, "error": stderr.strip()[-300:]}
    res["cpu_pct"] = 100 * cpu / window
    wall = summary.get("monitored_us", 0) / 1e6 or summary.get("wall_s")
    fig = record_figures(out, wall)
    res.update(fig)
    res["achieved"] = summary.get("achieved")
    if "mean_regions" in fig:
        if row == "kernel":  # kdamond keeps time: samples = its aggregation's length / sample
            per_aggr = fig["claimed_aggr_s"] / fig["sample_s"]
            aggr_s = fig["claimed_aggr_s"]
        else:
            per_aggr = fig["samples_per_aggr"] or fig["asked_samples"]
            aggr_s = fig["achieved_aggr_s"] or fig["claimed_aggr_s"]
        rs_per_s = fig["mean_regions"] * per_aggr / aggr_s
        res["cpu_per_rs_us"] = 1e6 * cpu / (window * rs_per_s)
        res["found"] = found_share(out, pages)
    return res


def fmt(v: object, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(rows: list[dict]) -> None:
    head = ("row", "CPU %", "µs/reg-smp", "syscalls/rs", "smp/aggr", "aggr claimed/achieved s",
            "GET/s", "hot found")  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        if "error" in r:
            print(f"| {r['row']} | error: {r['error']} |")
            continue
        if "cpu_pct" not in r:
            print(f"| {r['row']} | - | - | - | - | - | {r['get_per_s']:.0f} | - |")
            continue
        smp = r.get("samples_per_aggr")
        smp_txt = fmt(smp, ".1f") if smp is not None else "~" + fmt(r.get("asked_samples"), ".0f")
        if r["row"] == "kernel":
            ach = r.get("claimed_aggr_s")
        else:
            ach = r.get("achieved_aggr_s")
        done = r.get("achieved") or {}
        budget = done.get("cpu_budget") if isinstance(done, dict) else None
        note = f" (budget: {json.dumps(budget)})" if budget else ""
        print(
            f"| {r['row']} | {r['cpu_pct']:.1f} | {fmt(r.get('cpu_per_rs_us'), '.0f')} | n/a | "
            f"{smp_txt} | {fmt(r.get('claimed_aggr_s'), '.2f')} / {fmt(ach, '.2f')} | "
            f"{r['get_per_s']:.0f} | {fmt(r.get('found'), '.0%')} |{note}"
        )


def in_guest(args: argparse.Namespace) -> None:
    uname = os.uname().release
    print(f"guest kernel {uname}, {os.cpu_count()} vCPUs (TCG)", flush=True)
    Path("/proc/sys/kernel/randomize_va_space").write_text("0")
    # enabling a trace event with record-cmd on live-patches the scheduler's tracepoints, which
    # crashes the TCG guest now and then (docs/testing.md)
    Path("/sys/kernel/tracing/options/record-cmd").write_text("0")
    mc = subprocess.Popen(["taskset", "-c", "0", "/usr/bin/memcached", "-u", "root", "-m", "256",
                           "-p", "11211", "-U", "0", "-t", "2"])  # fmt: skip
    nr_hot = max(1, args.keys // 100)
    t = time.monotonic()
    load_values(args.keys, nr_hot)
    pages = hot_pages(mc.pid)
    print(f"loaded {args.keys} values in {time.monotonic() - t:.1f} s; {len(pages)} hot pages",
          flush=True)  # fmt: skip
    rows = []
    for row in args.rows.split(","):
        r = one_row(args, row, mc.pid, pages)
        print(json.dumps(r), flush=True)
        rows.append(r)
    mc.terminate()
    print_table(rows)


def main() -> int:
    args = parse_args()
    if args.load:
        nr_hot = max(1, args.keys // 100)
        print(json.dumps(run_load(args.keys, nr_hot, args.rate, args.seconds)))
        return 0
    if args.in_guest:
        in_guest(args)
        return 0
    near = [REPO.parent / "shared" / "testbed", REPO.parent.parent / "shared" / "testbed"]
    tb = Path(os.environ.get("PYDAMON_TESTBED", next((d for d in near if d.is_dir()), near[0])))
    cmd = ["bash", str(tb / "run-in-vm.sh"), "-m", "1536M", "-c", "2", "-w", "none", "-t", "1200",
           "-a", "nopcid", "--", sys.executable, str(Path(__file__).resolve()), "--in-guest",
           *sys.argv[1:]]  # fmt: skip
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
