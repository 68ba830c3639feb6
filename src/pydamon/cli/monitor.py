"""``pydamon start/stop/status/tune``: monitors that run in the background.

``start`` runs ``pydamon record`` detached, with its state in the run directory (see
:mod:`pydamon.cli.rundir`): one instance per target. The monitor refreshes ``status.json`` and
``latest.rec`` after every aggregation, so ``status`` and ``report access --live`` read files
and never wait for an aggregation. ``stop`` sends SIGTERM (the record is finalized cleanly);
``tune`` writes new monitoring attributes and sends SIGUSR1, and the monitor applies them at its
next aggregation (online, with the kernel's rescaling of nr_accesses and age).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

from pydamon.cli import rundir
from pydamon.cli.main import EXIT_FAILURE, EXIT_USAGE, CliError

START_EPILOG = """\
examples:
  pydamon start --sim hotcold                  # a simulated workload, in the background
  sudo pydamon start -p $(pidof myapp) -a 1s    # a process; one monitor per target
  sudo pydamon start paddr -o /var/tmp/phys.data
  pydamon status                               # what runs, refreshed every aggregation
  pydamon report access --live                  # the latest snapshot of the running monitor
  pydamon tune pid-1234 -s 10ms -a 200ms        # change intervals online
  pydamon stop pid-1234                         # SIGTERM; the record is finalized
"""


def register(sub: argparse._SubParsersAction, only: str | None = None) -> None:
    """Add start/stop/status/tune; with ``only``, just that one (``status`` and ``stop`` then skip
    the recording options' imports and answer fast)."""
    if only in (None, "start"):
        _register_start(sub)
    if only in (None, "stop", "status"):
        _register_control(sub)
    if only in (None, "tune"):
        _register_tune(sub)


def _register_start(sub: argparse._SubParsersAction) -> None:
    from pydamon.cli import record as record_cli

    p = sub.add_parser(
        "start",
        help="start a background monitor (recording to a file)",
        description="Start monitoring in the background; 'pydamon status' shows it.",
        epilog=START_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    record_cli.add_options(p)
    p.add_argument("--name", help="instance name (default: from the target, e.g. pid-1234)")
    p.set_defaults(func=run_start, out=None)
    global _START_PARSER
    _START_PARSER = p
    for action in p._actions:
        if action.dest == "out":
            action.default = None
            action.help = "record file (default: ./pydamon-<name>.data)"


def positive_seconds(text: str) -> float:
    # imported when used: 'status' and 'stop' answer without the monitoring imports
    from pydamon.cli.common import positive_seconds as parse

    return parse(text)


#: The kernel backend's default sysfs root (pydamon.kernel's DEFAULT_ROOT; not imported so that
#: 'status' and 'stop' stay light).
DAMON_ROOT = "/sys/kernel/mm/damon/admin"


def _add_backend_filter(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("backend")
    g.add_argument(
        "--backend",
        choices=("auto", "kernel", "user"),
        default="auto",
        help="user: background monitors only; kernel: also pydamon's kdamonds whose pydamon"
        " died (kill -9); auto (default): both",
    )
    g.add_argument(
        "--damon-root",
        dest="damon_root",
        metavar="DIR",
        default=os.environ.get("PYDAMON_DAMON_ROOT") or DAMON_ROOT,
        help="DAMON sysfs directory of the kernel backend (default $PYDAMON_DAMON_ROOT, else "
        f"{DAMON_ROOT})",
    )


def _pool_slots(args: argparse.Namespace) -> list[Any]:
    """pydamon's kdamonds at --damon-root (none looked for without a pool record)."""
    from pydamon.runstate import kdamond_pool_path

    if getattr(args, "backend", "auto") == "user" or not os.path.exists(kdamond_pool_path()):
        return []
    from pydamon.cli.engine import orphan_slots

    return orphan_slots(args.damon_root)


def _register_control(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "stop",
        help="stop background monitors",
        epilog="examples:\n  pydamon stop\n  pydamon stop pid-1234\n  pydamon stop --all\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("name", nargs="?", help="instance (optional when only one runs)")
    s.add_argument("--all", action="store_true", help="stop every instance")
    s.add_argument("--timeout", type=positive_seconds, default=30.0, help="seconds to wait (30)")
    _add_backend_filter(s)
    s.set_defaults(func=run_stop)

    st = sub.add_parser(
        "status",
        help="show background monitors (instant: reads their status files)",
        epilog="examples:\n  pydamon status\n  pydamon status --json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    st.add_argument("name", nargs="?", help="only this instance")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    _add_backend_filter(st)
    st.set_defaults(func=run_status)


def _register_tune(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "tune",
        help="change a running monitor's attributes online",
        epilog="examples:\n  pydamon tune pid-1234 -s 10ms -a 200ms\n"
        "  pydamon tune --monitoring_nr_regions_range 50 2000\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("name", nargs="?", help="instance (optional when only one runs)")
    from pydamon.cli.common import add_attrs_options

    g = t.add_argument_group("monitoring attributes (unspecified ones are kept)")
    add_attrs_options(g)
    t.add_argument(
        "--timeout", type=positive_seconds, default=30.0, help="seconds to wait for it to apply"
    )
    _add_backend_filter(t)
    t.set_defaults(func=run_tune)


# -- the monitor side ------------------------------------------------------------------------------
class InstanceState:
    """Kept by a background recorder: pid file, status file, latest snapshot, tune requests."""

    def __init__(self, path: str, out: str) -> None:
        self.path = path
        self.out = out
        self.tune_requested = False
        self.started = time.time()
        self.last_applied_tune = 0
        self.backend: dict[str, Any] = {}
        with open(os.path.join(path, "pid"), "w") as f:
            f.write(str(os.getpid()))

    def attach(self, ctx: Any) -> None:
        signal.signal(signal.SIGUSR1, self._on_usr1)
        ctx.add_callback("after_aggregation", self._apply_tune)
        # the first status appears once the operations set initialized (the target is
        # monitorable): 'start' waits for it, or for the monitor's exit with an error
        from pydamon.cli.engine import ops_of

        ops = ops_of(ctx)
        ops_init = ops.init

        def init_then_report(c: Any) -> None:
            ops_init(c)
            self._write_status(c, None, 0, "running")

        ops.init = init_then_report

    def _on_usr1(self, _signum: int, _frame: Any) -> None:
        self.tune_requested = True

    def _apply_tune(self, ctx: Any) -> None:
        if not self.tune_requested:
            return
        self.tune_requested = False
        from dataclasses import replace

        result: dict[str, Any]
        try:
            req = rundir.read_json(os.path.join(self.path, "tune.json"))
            # over what was asked, not over a CPU budget's stretch of it
            asked = ctx.attrs if ctx.budget is None else ctx.budget.asked
            new = replace(asked, **req["attrs"])
            ctx.set_attrs(new)
            result = {"id": req.get("id"), "ok": True}
        except Exception as err:  # a bad request must not end the monitor
            result = {"id": None, "ok": False, "error": str(err).splitlines()[0]}
            try:
                result["id"] = rundir.read_json(os.path.join(self.path, "tune.json")).get("id")
            except (OSError, ValueError):
                pass
        rundir.write_json_atomic(os.path.join(self.path, "tune_result.json"), result)

    def update(self, ctx: Any, part: Any, nr_snapshots: int) -> None:
        from pydamon.record import write_record

        write_record(os.path.join(self.path, "latest.rec"), part)
        self._write_status(ctx, part, nr_snapshots, "running")

    def _write_status(self, ctx: Any, part: Any, nr_snapshots: int, state: str) -> None:
        from pydamon.core.budget import achieved

        a = ctx.attrs
        status: dict[str, Any] = {
            "state": state,
            "updated_unix": time.time(),
            "started_unix": self.started,
            "monitored_us": ctx.clock.now_us() - ctx.aggregation_start_us
            if part is None
            else int(part.snap_end_us.max()) - int(self._first_us(part)),
            "nr_snapshots": nr_snapshots,
            "nr_aggregations": ctx.nr_aggregations,
            "nr_regions": ctx.nr_regions,
            "monitor_cpu_s": round(ctx.monitor_cpu_s, 3),
            "achieved": achieved(ctx),
            "record": self.out,
            **self.backend,
            "attrs": {
                "sample_interval_us": a.sample_interval_us,
                "aggr_interval_us": a.aggr_interval_us,
                "ops_update_interval_us": a.ops_update_interval_us,
                "min_nr_regions": a.min_nr_regions,
                "max_nr_regions": a.max_nr_regions,
            },
        }
        from pydamon.ops.probe import syscalls_per_region_sample

        syscalls = syscalls_per_region_sample(ctx.targets)
        if syscalls is not None:  # real memory only: what the access checks cost so far
            status["syscalls_per_region_sample"] = round(syscalls, 3)
        if part is not None:
            from pydamon.report.wss import total_bytes, wss_bytes

            status["total_bytes"] = int(total_bytes(part).sum())
            status["wss_bytes"] = int(wss_bytes(part).sum())
        rundir.write_json_atomic(os.path.join(self.path, "status.json"), status)

    def _first_us(self, part: Any) -> int:
        if not hasattr(self, "_first"):
            self._first = int(part.snap_start_us.min())
        return self._first


def run_as_instance(args: argparse.Namespace) -> int:
    """Entry of ``pydamon record --state_dir DIR`` (spawned by ``start``)."""
    from pydamon.cli import record as record_cli
    from pydamon.cli.common import attrs_from_args, setup_targets

    state_dir = args.state_dir
    out = os.path.abspath(args.out)
    state = InstanceState(state_dir, out)
    attrs = attrs_from_args(args)
    schemes = record_cli.load_schemes(args.schemes) if args.schemes else []
    setup = setup_targets(args)
    rc = record_cli.record(
        args, setup, attrs, schemes, out, int(args.output_permission, 8), state=state
    )
    # a cleanly ended instance leaves nothing behind (its record stays at 'out'); after a
    # failure the directory stays so that 'start' can show the error from its log
    shutil.rmtree(state_dir, ignore_errors=True)
    return rc


# -- start / stop / status / tune ------------------------------------------------------------
def _default_name(args: argparse.Namespace) -> str:
    cmd = [c for c in (args.target_command or []) if c != "--"]
    if args.target_pid:
        return rundir.instance_name("pid", str(args.target_pid))
    if args.sim:
        return rundir.instance_name("sim", os.path.basename(args.sim))
    if cmd == ["paddr"] or (args.ops == "paddr" and not cmd):
        return "paddr"
    if cmd:
        return rundir.instance_name("cmd", os.path.basename(cmd[0]))
    raise CliError(
        "nothing to monitor: give --target_pid PID, --sim WORKLOAD, 'paddr', or -- COMMAND",
        EXIT_USAGE,
    )


_START_PARSER: argparse.ArgumentParser | None = None


def run_start(args: argparse.Namespace) -> int:
    from pydamon.cli.record import reparse_after_keyword

    reparse_after_keyword(args, _START_PARSER)
    name = args.name or _default_name(args)
    base = rundir.run_dir()
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
    except OSError as err:
        raise CliError(f"cannot create run directory {base}: {err.strerror}") from None
    inst = rundir.find_instance(name)
    if inst is not None:
        if inst.alive:
            raise CliError(
                f"{name} is already monitored (pid {inst.pid}); 'pydamon stop {name}' first",
                EXIT_USAGE,
            )
        shutil.rmtree(inst.path, ignore_errors=True)  # stale (killed) instance
    path = os.path.join(base, name)
    os.makedirs(path, mode=0o700)
    out = os.path.abspath(args.out or f"pydamon-{name}.data")
    argv = [a for a in sys.argv[1:]]
    try:
        i = argv.index("start")
    except ValueError:
        i = -1
    rest = argv[i + 1 :]
    rest = _drop_option(rest, "--name", 1)
    rest = _drop_option(rest, "-o", 1)
    rest = _drop_option(rest, "--out", 1)
    if args.sim and args.sim_speed is None:
        rest = ["--sim_speed", "1", *rest]  # live monitors of a simulation run in real time
    child = [sys.executable, "-m", "pydamon.cli.main", "record", "-q", "-o", out,
             "--state_dir", path, *rest]  # fmt: skip
    info = {"name": name, "record": out, "argv": rest, "cwd": os.getcwd()}
    rundir.write_json_atomic(os.path.join(path, "info.json"), info)
    log = open(os.path.join(path, "log"), "wb")
    proc = subprocess.Popen(
        child, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
    )
    log.close()
    deadline = time.monotonic() + 20
    status_file = os.path.join(path, "status.json")
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            msg = _last_error_line(os.path.join(path, "log"))
            shutil.rmtree(path, ignore_errors=True)
            raise CliError(f"monitor failed to start: {msg}", proc.returncode or EXIT_FAILURE)
        if os.path.exists(status_file):
            break
        time.sleep(0.02)
    else:
        raise CliError(f"monitor {name} did not report within 20 s; see {path}/log")
    if getattr(args, "json", False):
        print(json.dumps({"name": name, "pid": proc.pid, "record": out}))
    else:
        print(f"started {name} (pid {proc.pid}), recording to {out}")
    return 0


def _drop_option(argv: list[str], opt: str, nargs: int) -> list[str]:
    """``argv`` without ``opt`` and its values (options after ``--`` are left alone)."""
    out: list[str] = []
    skip = 0
    for i, a in enumerate(argv):
        if skip:
            skip -= 1
            continue
        if a == "--":
            return out + argv[i:]
        if a == opt:
            skip = nargs
            continue
        if a.startswith(opt + "="):
            continue
        out.append(a)
    return out


def _last_error_line(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            lines = [x.strip() for x in f if x.strip()]
    except OSError:
        return "no log"
    for line in reversed(lines):
        if "error" in line.lower():
            return line.split("error: ", 1)[-1]
    return lines[-1] if lines else "exited without a message"


def _pick(name: str | None, *, alive_only: bool = True) -> list[rundir.Instance]:
    insts = rundir.instances()
    if name:
        insts = [i for i in insts if i.name == name]
        if not insts:
            raise CliError(f"no monitor named {name!r}; see 'pydamon status'", EXIT_USAGE)
        return insts
    if alive_only:
        insts = [i for i in insts if i.alive]
    return insts


def run_stop(args: argparse.Namespace) -> int:
    insts = _pick(args.name, alive_only=False)
    orphans = [] if args.name else [s for s in _pool_slots(args) if s.orphan]
    if orphans:
        from pydamon.cli.engine import stop_orphans

        for slot in stop_orphans(args.damon_root):
            print(
                f"stopped orphan kdamond {slot.index} at {slot.root} "
                f"(its pydamon, pid {slot.owner_pid}, was gone)"
            )
        if not insts:
            return 0
    if not insts:
        raise CliError("no background monitor runs", EXIT_USAGE)
    if len(insts) > 1 and not args.all and not args.name:
        names = ", ".join(i.name for i in insts)
        raise CliError(f"several monitors run ({names}); name one or use --all", EXIT_USAGE)
    failed = 0
    for inst in insts:
        pid = inst.pid
        record = inst.status().get("record")
        if pid is None or not inst.alive:
            shutil.rmtree(inst.path, ignore_errors=True)
            print(f"{inst.name}: was not running (cleaned up)")
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except PermissionError:
            raise CliError(f"no permission to stop {inst.name} (pid {pid}); use sudo", 3) from None
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + args.timeout
        while rundir.pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if rundir.pid_alive(pid):
            print(f"{inst.name}: still running after {args.timeout} s", file=sys.stderr)
            failed += 1
        else:
            shutil.rmtree(inst.path, ignore_errors=True)
            print(f"stopped {inst.name}; record: {record}")
    return EXIT_FAILURE if failed else 0


def run_status(args: argparse.Namespace) -> int:
    insts = _pick(args.name, alive_only=False)
    statuses = [i.status() for i in insts]
    for s in statuses:
        if not s["running"]:
            s["state"] = "dead (killed?)"
    slots = [] if args.name else _pool_slots(args)
    if args.json:
        kdamonds = [{"name": f"kdamond-{k.index}", **k.to_dict()} for k in slots]
        print(json.dumps(statuses + kdamonds, indent=1))
        return 0
    if slots:
        from pydamon.cli.engine import describe_slot

        for slot in slots:
            print(describe_slot(slot))
    if not statuses and not slots:
        print("no background monitors (start one with 'pydamon start')")
        return 0
    for s in statuses:
        a = s.get("attrs", {})
        age = time.time() - s.get("updated_unix", time.time())
        print(f"{s['name']}: {s.get('state', '?')}, pid {s.get('pid')}")
        print(
            f"  {s.get('nr_snapshots', 0)} snapshots, {s.get('nr_regions', 0)} regions, "
            f"monitor CPU {s.get('monitor_cpu_s', 0)} s, updated {age:.1f} s ago"
        )
        if a:
            print(
                f"  sample {a['sample_interval_us']} us, aggr {a['aggr_interval_us']} us, "
                f"update {a['ops_update_interval_us']} us, regions "
                f"[{a['min_nr_regions']}, {a['max_nr_regions']}]"
            )
        for line in _achieved_lines(s.get("achieved")):
            print(f"  {line}")
        if "syscalls_per_region_sample" in s:
            print(
                f"  access checks: {s['syscalls_per_region_sample']} system calls per region-sample"
            )
        if "wss_bytes" in s:
            print(f"  last snapshot: wss {s['wss_bytes']} of {s['total_bytes']} bytes")
        if "backend" in s:
            print(f"  backend: {s['backend']} ({s.get('backend_reason', '')})")
        print(f"  record: {s.get('record')}")
    return 0


def _achieved_lines(done: dict[str, Any] | None) -> list[str]:
    """``status``'s lines on what the monitor achieved: intervals against those asked, CPU per
    sample and per region-sample, and what its CPU budget chose."""
    if not done:
        return []
    from pydamon.units import format_duration_us as dur

    lines = []
    sample, asked = done["sample_interval_us"], done["asked_sample_interval_us"]
    line = f"achieved: sampling {dur(sample)}" + (
        f" (asked {dur(asked)})" if sample != asked else ""
    )
    if done.get("last_mean_access_window_us", -1) >= 0:
        line += f", mean access window {dur(done['last_mean_access_window_us'])}"
    if done.get("last_aggregation_us", -1) >= 0:
        line += (
            f", last aggregation {dur(done['last_aggregation_us'])} for "
            f"{done['last_nr_samples']} samples (asked {dur(done['asked_aggr_interval_us'])})"
        )
    lines.append(line)
    if done.get("cpu_per_sample_us") is not None:
        lines.append(
            f"CPU {done['cpu_per_sample_us']:g} us per sample, "
            f"{done['cpu_per_region_sample_us']:g} us per region-sample"
        )
    budget = done.get("cpu_budget")
    if budget:
        used = budget.get("cpu_usage_percent")
        lines.append(
            f"CPU budget {budget['cpu_budget_percent']:g}%"
            + (f" (using {used:g}%)" if used is not None else " (measuring)")
            + f": sampling stretched {budget['stretch']:g}x, max_nr_regions "
            f"{budget['max_nr_regions']} (asked {budget['asked_max_nr_regions']})"
        )
    else:
        lines.append("CPU budget: none")
    return lines


def run_tune(args: argparse.Namespace) -> int:
    insts = _pick(args.name)
    if not insts:
        raise CliError("no background monitor runs", EXIT_USAGE)
    if len(insts) > 1:
        names = ", ".join(i.name for i in insts)
        raise CliError(f"several monitors run ({names}); name one", EXIT_USAGE)
    inst = insts[0]
    if not inst.alive:
        raise CliError(f"{inst.name} is not running", EXIT_USAGE)
    attrs: dict[str, Any] = {}
    if args.monitoring_intervals:
        s, a, u = args.monitoring_intervals
        attrs.update(sample_interval_us=s, aggr_interval_us=a, ops_update_interval_us=u)
    for opt, key in (("sample", "sample_interval_us"), ("aggr", "aggr_interval_us"),
                     ("updr", "ops_update_interval_us"), ("minr", "min_nr_regions"),
                     ("maxr", "max_nr_regions")):  # fmt: skip
        if getattr(args, opt) is not None:
            attrs[key] = getattr(args, opt)
    if args.monitoring_nr_regions_range:
        attrs["min_nr_regions"], attrs["max_nr_regions"] = args.monitoring_nr_regions_range
    if not attrs:
        raise CliError("nothing to tune; give e.g. -s 10ms -a 200ms", EXIT_USAGE)
    # validate here so a bad request is reported at once
    from dataclasses import replace

    from pydamon.core import Attrs, AttrsError

    cur = inst.status().get("attrs") or {}
    try:
        replace(Attrs(**cur), **attrs).with_aggr_samples().validate()
    except (AttrsError, TypeError) as err:
        raise CliError(f"invalid monitoring attributes: {err}", EXIT_USAGE) from None
    req_id = f"{os.getpid()}-{time.time()}"
    rundir.write_json_atomic(inst.file("tune.json"), {"id": req_id, "attrs": attrs})
    pid = inst.pid
    assert pid is not None
    try:
        os.kill(pid, signal.SIGUSR1)
    except PermissionError:
        raise CliError(f"no permission to tune {inst.name} (pid {pid}); use sudo", 3) from None
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            res = rundir.read_json(inst.file("tune_result.json"))
        except (OSError, ValueError):
            res = {}
        if res.get("id") == req_id:
            if not res.get("ok"):
                raise CliError(f"{inst.name} rejected the new attributes: {res.get('error')}")
            print(f"tuned {inst.name}: " + ", ".join(f"{k}={v}" for k, v in attrs.items()))
            return 0
        if not inst.alive:
            raise CliError(f"{inst.name} exited before applying the attributes")
        time.sleep(0.02)
    raise CliError(f"{inst.name} did not apply the attributes within {args.timeout} s")
