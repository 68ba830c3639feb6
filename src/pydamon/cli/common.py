"""Options and helpers shared by the monitoring commands (record, schemes, start, tune)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import pydamon.ops  # noqa: F401 - registers the operations sets
from pydamon.cli.main import EXIT_UNSUPPORTED, EXIT_USAGE, CliError
from pydamon.core import Attrs, AttrsError, Context, Target
from pydamon.core.operations import Operations, OperationsUnavailable, select_operations
from pydamon.runstate import pid_alive
from pydamon.units import (
    explain,
    format_bytes,
    format_duration_us,
    parse_bp,
    parse_count,
    parse_duration,
    parse_size,
)

OPS_NAMES = ("vaddr", "fvaddr", "paddr", "sim")


def time_us(text: str) -> int:
    """argparse type: microseconds, plain ("5000") or with a unit ("5ms", "1 s", "1d")."""
    try:
        return parse_duration(text, "us")
    except ValueError as err:
        raise argparse.ArgumentTypeError(explain(text, err)) from None


def positive_time_us(text: str) -> int:
    """argparse type: an interval in microseconds above 0 (0 would never let time pass)."""
    value = time_us(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be above 0 (e.g. 5ms)")
    return value


def positive_number(text: str, what: str = "a number") -> float:
    """argparse type: a finite number above 0 (no inf, nan, 0 or negative)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number above 0")
    return value


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds above 0."""
    return positive_number(text, "a number of seconds")


def seconds_or_zero(text: str) -> float:
    """argparse type: a finite number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number, 0 or above")
    return value


def positive_size(text: str) -> int:
    """argparse type: bytes above 0."""
    value = size_bytes(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be above 0 (e.g. 1GiB)")
    return value


def cpu_budget_percent(text: str) -> float:
    """argparse type: a CPU budget in per cent of one CPU, 0 (no budget) to 100 ("5", "5%")."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a per cent (e.g. 5 or 5%)") from None
    if not math.isfinite(value) or not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(
            f"{text!r}: must be 0 (no budget) to 100 per cent of one CPU"
        )
    return value


def add_cpu_budget_option(g: Any) -> None:
    g.add_argument(
        "--cpu-budget",
        "--cpu_budget",
        dest="cpu_budget",
        type=cpu_budget_percent,
        metavar="PERCENT",
        help="keep the monitor's CPU within PERCENT of one CPU by stretching the intervals, "
        "then lowering max_nr_regions (default 5 on real memory, none for --sim; 0: none)",
    )


def nr_regions(text: str) -> int:
    """argparse type: a number of regions (the kernel's minimum is 3)."""
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 3:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 3 (the kernel's minimum)")
    return value


def size_bytes(text: str) -> int:
    """argparse type: bytes ("4096", "0x1000", "4K", "4kb", "2MiB")."""
    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(explain(text, err)) from None


def address(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an address: {text!r} (e.g. 0x7f00000000)") from None


def parse_ranges(text: str) -> list[tuple[int, int]]:
    """``"START-END[,START-END...]"`` (decimal or 0x hex) into a sorted list of ranges."""
    out = []
    for part in text.replace(" ", ",").split(","):
        if not part:
            continue
        try:
            lo, hi = (int(x, 0) for x in part.split("-"))
        except ValueError:
            raise CliError(
                f"bad address range {part!r}; use START-END, e.g. 0x1000-0x200000", EXIT_USAGE
            ) from None
        if lo >= hi:
            raise CliError(f"empty address range {part!r} (start must be below end)", EXIT_USAGE)
        out.append((lo, hi))
    out.sort()
    for (lo, hi), (next_lo, next_hi) in zip(out, out[1:]):
        if next_lo < hi:
            # the kernel refuses overlapping regions of a target (damon_set_regions)
            raise CliError(
                f"--regions overlap: {lo:#x}-{hi:#x} and {next_lo:#x}-{next_hi:#x}", EXIT_USAGE
            )
    return out


def add_monitoring_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("monitoring (damo's names; times in us or with units)")
    add_attrs_options(g)
    g.add_argument(
        "--monitoring_intervals_goal",
        nargs=4,
        metavar=("ACCESS_BP", "AGGRS", "MIN_SAMPLE_US", "MAX_SAMPLE_US"),
        help="auto-tune the intervals (kernel v6.15+ semantics)",
    )
    add_cpu_budget_option(g)
    g.add_argument("--regions", metavar="S-E[,S-E..]", help="initial monitoring regions")
    g.add_argument("--ops", choices=OPS_NAMES, help="operations set (default: vaddr for a pid)")
    g.add_argument("--seed", type=int, help="random seed (reproduces a --sim run exactly)")


def add_attrs_options(g: Any) -> None:
    """The monitoring attributes' options (``record``, ``schemes``, ``start`` and ``tune``)."""
    g.add_argument(
        "-s", "--sample", type=positive_time_us, metavar="US", help="sampling interval (5ms)"
    )
    g.add_argument(
        "-a", "--aggr", type=positive_time_us, metavar="US", help="aggregation interval (100ms)"
    )
    g.add_argument(
        "-u", "--updr", type=positive_time_us, metavar="US", help="ops update interval (1s)"
    )
    g.add_argument(
        "-n", "--minr", type=nr_regions, metavar="N", help="minimum number of regions (10)"
    )
    g.add_argument(
        "-m", "--maxr", type=nr_regions, metavar="N", help="maximum number of regions (1000)"
    )
    g.add_argument(
        "--monitoring_intervals",
        nargs=3,
        type=positive_time_us,
        metavar=("SAMPLE", "AGGR", "UPDATE"),
        help="the three intervals at once",
    )
    g.add_argument(
        "--monitoring_nr_regions_range",
        nargs=2,
        type=nr_regions,
        metavar=("MIN", "MAX"),
        help="minimum and maximum number of regions",
    )


def add_target_options(p: argparse.ArgumentParser, *, command: bool = True) -> None:
    g = p.add_argument_group("target (one of)")
    g.add_argument("-p", "--target_pid", type=int, metavar="PID", help="monitor a running process")
    g.add_argument(
        "--sim",
        metavar="WORKLOAD",
        help="a simulated workload in virtual time (hotcold, stairs, zigzag, phases, hotspot "
        "or a workload file)",
    )
    g.add_argument(
        "--sim_size", type=positive_size, metavar="BYTES", help="simulated memory size (1GiB)"
    )
    g.add_argument(
        "--sim_speed",
        type=positive_number,
        metavar="X",
        help="simulated seconds per real second (default: as fast as possible; 1 for start)",
    )
    if command:
        p.add_argument(
            "target_command",
            nargs=argparse.REMAINDER,
            metavar="COMMAND",
            help="a command to start and monitor (after --), 'paddr' for physical memory",
        )


def attrs_from_args(args: argparse.Namespace, base: Attrs | None = None) -> Attrs:
    from dataclasses import replace

    from pydamon.core import IntervalsGoal

    attrs = base or Attrs(ops_update_interval_us=1_000_000)
    kw: dict[str, Any] = {}
    if getattr(args, "monitoring_intervals", None):
        s, a, u = args.monitoring_intervals
        kw.update(sample_interval_us=s, aggr_interval_us=a, ops_update_interval_us=u)
    if getattr(args, "sample", None) is not None:
        kw["sample_interval_us"] = args.sample
    if getattr(args, "aggr", None) is not None:
        kw["aggr_interval_us"] = args.aggr
    if getattr(args, "updr", None) is not None:
        kw["ops_update_interval_us"] = args.updr
    if getattr(args, "monitoring_nr_regions_range", None):
        kw["min_nr_regions"], kw["max_nr_regions"] = args.monitoring_nr_regions_range
    if getattr(args, "minr", None) is not None:
        kw["min_nr_regions"] = args.minr
    if getattr(args, "maxr", None) is not None:
        kw["max_nr_regions"] = args.maxr
    if getattr(args, "monitoring_intervals_goal", None):
        bp, aggrs, lo, hi = args.monitoring_intervals_goal
        try:
            kw["intervals_goal"] = IntervalsGoal(
                parse_bp(bp), parse_count(aggrs), parse_duration(lo), parse_duration(hi)
            )
        except ValueError as err:
            given = " ".join(args.monitoring_intervals_goal)
            raise CliError(f"bad --monitoring_intervals_goal {given}: {err}", EXIT_USAGE) from None
    attrs = replace(attrs, **kw)
    try:
        attrs.with_aggr_samples().validate()
    except AttrsError as err:
        raise CliError(f"invalid monitoring attributes: {err}", EXIT_USAGE) from None
    return attrs


def make_ops(name: str, **kwargs: Any) -> Operations[Any]:
    """The operations set registered as ``name`` (the core's registry)."""
    try:
        return select_operations(name, **kwargs)
    except OperationsUnavailable as err:
        raise CliError(str(err), EXIT_UNSUPPORTED) from None


@dataclass
class MonitorSetup:
    """What a monitoring command monitors: context pieces plus the started process, if any."""

    ops_name: str
    ops: Operations[Any]
    targets: list[Target]
    target_names: list[str]
    process: Any = None  # subprocess.Popen of a command target
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        return self.targets[0].pid if self.targets else None


def setup_targets(args: argparse.Namespace, *, start_command: bool = True) -> MonitorSetup:
    """Resolve the target options into an operations set and targets (may start a command)."""
    import subprocess

    command = [c for c in (getattr(args, "target_command", None) or [])]
    if command and command[0] == "--":
        command = command[1:]
    chosen = [
        bool(getattr(args, "target_pid", None)),
        bool(getattr(args, "sim", None)),
        bool(command),
    ]
    ops_name = getattr(args, "ops", None)
    if sum(chosen) > 1:
        raise CliError("give one target: --target_pid, --sim, or a command after --", EXIT_USAGE)
    ranges = parse_ranges(args.regions) if getattr(args, "regions", None) else None
    if command == ["paddr"] or (ops_name == "paddr" and not any(chosen)):
        ops = make_ops("paddr")
        return MonitorSetup("paddr", ops, [Target(ranges=ranges)], ["paddr"])
    if args.sim:
        if ops_name not in (None, "sim"):
            raise CliError(f"--sim uses the sim operations set, not --ops {ops_name}", EXIT_USAGE)
        workload: Any = args.sim
        if os.path.exists(args.sim):
            from pydamon.ops.sim import load_workload

            try:
                workload = load_workload(args.sim)
            except (OSError, ValueError) as err:
                raise CliError(f"bad workload file {args.sim}: {err}") from None
        kw: dict[str, Any] = {"seed": args.seed}
        if getattr(args, "sim_size", None):
            kw["total_bytes"] = args.sim_size
        try:
            ops = make_ops("sim", workloads=workload, **kw)
        except ValueError as err:
            raise CliError(str(err), EXIT_USAGE) from None
        name = args.sim if isinstance(workload, str) else os.path.basename(args.sim)
        return MonitorSetup("sim", ops, [Target(ranges=ranges)], [f"sim:{name}"])
    if getattr(args, "target_pid", None):
        pid = args.target_pid
        if pid <= 0 or not pid_alive(pid):
            raise CliError(f"no process with pid {pid}; check the pid (ps -p {pid})", EXIT_USAGE)
        ops_name = ops_name or "vaddr"
        ops = make_ops(ops_name)
        return MonitorSetup(ops_name, ops, [Target(pid=pid, ranges=ranges)], [_comm(pid)])
    if command:
        if not start_command:
            raise CliError("this command cannot start a program; give --target_pid", EXIT_USAGE)
        ops_name = ops_name or "vaddr"
        ops = make_ops(ops_name)  # before starting anything, so a missing ops set starts nothing
        try:
            proc = subprocess.Popen(command)
        except OSError as err:
            raise CliError(f"cannot start {command[0]}: {err.strerror or err}") from None
        target = Target(pid=proc.pid, ranges=ranges)
        return MonitorSetup(ops_name, ops, [target], [" ".join(command)], process=proc)
    raise CliError(
        "nothing to monitor: give --target_pid PID, --sim WORKLOAD, 'paddr', or -- COMMAND",
        EXIT_USAGE,
    )


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return str(pid)


class PacedClock:
    """Virtual time that advances no faster than ``speed`` times the wall clock.

    Lets a simulated workload run as a live background monitor without burning a CPU.
    """

    def __init__(self, speed: float) -> None:
        import time

        self._time = time
        self.speed = speed
        self._now_us = 0
        self._wall_origin = time.monotonic()

    def now_us(self) -> int:
        return self._now_us

    def sleep_until(self, deadline_us: int) -> None:
        if deadline_us <= self._now_us:
            return
        self._now_us = deadline_us
        wall_due = self._wall_origin + deadline_us / 1e6 / self.speed
        delay = wall_due - self._time.monotonic()
        if delay > 0:
            self._time.sleep(delay)


def make_context(
    setup: MonitorSetup,
    attrs: Attrs,
    seed: int | None,
    sim_speed: float | None = None,
    cpu_budget: float | None = None,
) -> Context:
    """``cpu_budget`` None: the operations set's default (5% on real memory, none in a sim)."""
    clock = PacedClock(sim_speed) if setup.ops_name == "sim" and sim_speed else None
    try:
        return Context(
            setup.ops, setup.targets, attrs, seed=seed, clock=clock, cpu_budget=cpu_budget
        )
    except AttrsError as err:
        raise CliError(f"invalid monitoring attributes: {err}", EXIT_USAGE) from None


def is_tty(stream: Any = None) -> bool:
    stream = stream or sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


# The commands' names for the one byte and duration formatter.
human_bytes = format_bytes
human_time_us = format_duration_us
