"""``pydamon record``: monitor a process, a command, physical memory or a simulated workload and
stream the snapshots to a record file."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

from pydamon.cli.common import (
    MonitorSetup,
    add_monitoring_options,
    add_target_options,
    attrs_from_args,
    is_tty,
    positive_seconds,
    setup_targets,
)
from pydamon.cli.engine import add_backend_options, make_cli_context
from pydamon.cli.main import EXIT_UNSUPPORTED, EXIT_USAGE, CliError
from pydamon.core import Context
from pydamon.core.budget import achieved
from pydamon.core.errors import FeatureMissing
from pydamon.runstate import pid_alive
from pydamon.units import format_bytes, format_duration_us

DEFAULT_OUTPUT = "pydamon.data"
OUTPUT_TYPES = ("pydamon", "json_compressed", "json", "parquet")

EPILOG = """\
examples:
  pydamon record --sim hotcold --timeout 30          # 30 s of a simulated workload (virtual time)
  pydamon record -p $(pidof myapp) -o myapp.data     # a running process, until it exits or ^C
  sudo pydamon record -- ./prog arg1 arg2           # start a command and monitor it
  sudo pydamon record paddr --timeout 60             # physical memory for a minute
  pydamon record --sim stairs -s 10ms -a 200ms --monitoring_nr_regions_range 20 500
  pydamon record --sim zigzag --output_type json_compressed -o damon.data   # for damo report

The record is written as snapshots are made: ^C, SIGTERM, the target exiting or --timeout end
it cleanly; even after kill -9 it reads up to the last complete snapshot.
"""


def register(sub: argparse._SubParsersAction) -> None:
    global _PARSER
    p = sub.add_parser(
        "record",
        help="record data access patterns to a file",
        description="Monitor a target's data accesses and stream snapshots to a record file.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(p)
    p.set_defaults(func=run)
    _PARSER = p


_PARSER: argparse.ArgumentParser | None = None


def reparse_after_keyword(args: argparse.Namespace, parser: argparse.ArgumentParser | None) -> None:
    """``pydamon record paddr --timeout 60``: options after the 'paddr' keyword still count."""
    cmd = list(getattr(args, "target_command", None) or [])
    if parser is not None and cmd[:1] == ["paddr"] and len(cmd) > 1:
        parser.parse_args(cmd[1:], namespace=args)
        args.target_command = ["paddr"] + list(args.target_command or [])


def add_options(p: argparse.ArgumentParser) -> None:
    add_target_options(p)
    add_monitoring_options(p)
    add_backend_options(p)
    g = p.add_argument_group("output")
    g.add_argument(
        "-o", "--out", default=DEFAULT_OUTPUT, help=f"record file (default {DEFAULT_OUTPUT})"
    )
    g.add_argument(
        "--output_type",
        choices=OUTPUT_TYPES,
        default="pydamon",
        help="file format; damo's json forms and parquet are written when recording ends",
    )
    g.add_argument(
        "--output_permission",
        default="644",
        type=permission_text,
        metavar="OCTAL",
        help="file mode, readable by its owner (default 644)",
    )
    g.add_argument(
        "--compress", type=compress_level, default=0, metavar="LEVEL", help="zlib level 1-9 (0)"
    )
    g.add_argument(
        "--force", action="store_true", help="overwrite an existing output (default: keep OUT.old)"
    )
    g.add_argument(
        "--timeout",
        type=positive_seconds,
        metavar="SECONDS",
        help="stop after this long (monitor time: virtual for --sim, default 10 s there)",
    )
    g.add_argument(
        "--schemes",
        metavar="FILE",
        help="also apply DAMOS schemes from a file (format: pydamon schemes --help-format)",
    )
    g.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    g.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    # used by 'pydamon start' to run this recorder as a background monitor
    g.add_argument("--state_dir", help=argparse.SUPPRESS)


def permission_text(text: str) -> str:
    """argparse type: an octal file mode (``600``) its owner can read (else no report could read
    the record without root)."""
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"{text!r} is not an octal file mode (e.g. 600)")
    if not mode & 0o400:
        raise argparse.ArgumentTypeError(
            f"{text!r}: the owner could not read the record; give a mode with u+r (e.g. 600)"
        )
    return text


def compress_level(text: str) -> int:
    """argparse type: a zlib level, 0 (none) to 9."""
    try:
        level = int(text)
    except ValueError:
        level = -1
    if not 0 <= level <= 9:
        raise argparse.ArgumentTypeError(f"{text!r}: a zlib level is 0 (none) to 9")
    return level


def _default_sim_duration_us(setup: MonitorSetup) -> int:
    specs = getattr(setup.ops, "specs", None) or []
    if specs and getattr(specs[0], "end_us", None):
        return int(specs[0].end_us)
    return 10_000_000


def load_schemes(path: str) -> list[Any]:
    from pydamon.cli.schemes import load_scheme_file

    return load_scheme_file(path)


def _drop_empty(recorder: Any, out: str, stream_path: str) -> None:
    """A recording that failed before its first snapshot leaves no empty file behind."""
    if recorder.nr_snapshots == 0:
        for path in {out, stream_path}:
            if os.path.exists(path):
                os.unlink(path)


class Progress:
    """A one-line progress display on a terminal (stderr), refreshed at most twice a second."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.wall_start = time.monotonic()
        self.last = 0.0
        self.monitor_start_us = 0

    def update(self, ctx: Context, nr_snapshots: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last < 0.5:
            return
        self.last = now
        elapsed_us = ctx.clock.now_us() - self.monitor_start_us
        line = (
            f"\rrecording: {format_duration_us(elapsed_us)} monitored, {nr_snapshots} snapshots, "
            f"{ctx.nr_regions} regions, monitor CPU {ctx.monitor_cpu_s:.2f} s"
        )
        sys.stderr.write(line.ljust(90)[:120])
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def run(args: argparse.Namespace) -> int:
    reparse_after_keyword(args, _PARSER)
    mode = int(args.output_permission, 8)
    if args.state_dir:
        from pydamon.cli.monitor import run_as_instance

        return run_as_instance(args)
    out = os.path.abspath(args.out)
    if os.path.isdir(out):
        raise CliError(f"{args.out} is a directory; give a file name with -o", EXIT_USAGE)
    parent = os.path.dirname(out)
    if not os.access(parent, os.W_OK):
        raise CliError(f"cannot write to {parent}; choose another -o or fix permissions")
    attrs = attrs_from_args(args)
    schemes = load_schemes(args.schemes) if args.schemes else []
    setup = setup_targets(args)
    return record(args, setup, attrs, schemes, out, mode)


def record(
    args: argparse.Namespace,
    setup: MonitorSetup,
    attrs: Any,
    schemes: list[Any],
    out: str,
    mode: int,
    *,
    state: Any = None,
) -> int:
    from pydamon.record import RecordError
    from pydamon.record.ownership import claim_output

    holder = f"pydamon start {os.path.basename(state.path)}" if state else "pydamon record"
    try:  # the output is ours while we write it; an existing one is kept as .old
        owner = claim_output(out, holder=holder, force=getattr(args, "force", False))
    except RecordError as err:
        raise CliError(str(err)) from None
    with owner:
        return _record(args, setup, attrs, schemes, out, mode, state=state)


def _record(
    args: argparse.Namespace,
    setup: MonitorSetup,
    attrs: Any,
    schemes: list[Any],
    out: str,
    mode: int,
    *,
    state: Any = None,
) -> int:
    from pydamon.record import export_record, read_record
    from pydamon.record.recorder import Recorder

    ctx, backend = make_cli_context(args, setup, attrs, schemes)
    stream_path = out if args.output_type == "pydamon" else f"{out}.part"
    meta: dict[str, Any] = {
        "ops": setup.ops_name,
        "command": sys.argv[1:],
        "targets": [
            {"index": i, "target_id": t.target_id, "pid": t.pid, "name": setup.target_names[i]}
            for i, t in enumerate(setup.targets)
        ],
    }
    meta.update(backend.meta())
    if setup.ops_name == "sim":
        meta["sim_workload"] = args.sim
    meta["cpu_budget_percent"] = 0.0 if ctx.budget is None else ctx.budget.percent
    progress = Progress(is_tty() and not args.quiet and not state)
    recorder_box: list[Any] = []

    def on_snapshot(c: Context, part: Any) -> None:
        rec = recorder_box[0]
        progress.update(c, rec.nr_snapshots)
        if state is not None:
            state.update(c, part, rec.nr_snapshots)

    recorder = Recorder(
        ctx,
        stream_path,
        meta=meta,
        footprints=setup.ops_name != "sim",
        compress=max(0, min(args.compress, 9)),
        on_snapshot=on_snapshot,
        lock=stream_path != out,  # ``out`` is locked already; a ``.part`` gets its own lock
    )
    recorder_box.append(recorder)
    os.chmod(stream_path, mode)
    progress.monitor_start_us = ctx.clock.now_us()

    stop_reason = ["target ended"]

    def on_signal(signum: int, _frame: Any) -> None:
        stop_reason[0] = signal.Signals(signum).name
        ctx.stop()

    def check_target(c: Context) -> None:
        if setup.process is not None and setup.process.poll() is not None:
            stop_reason[0] = f"command exited ({setup.process.returncode})"
            c.stop()
            return
        pid = setup.pid
        if setup.process is None and pid is not None and not pid_alive(pid):
            stop_reason[0] = f"process {pid} exited"
            c.stop()

    ctx.add_callback("after_aggregation", check_target)
    if state is not None:
        state.backend = backend.meta()
        state.attach(ctx)
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    duration_us = None
    if args.timeout is not None:
        if args.timeout <= 0:
            raise CliError("--timeout must be positive", EXIT_USAGE)
        duration_us = int(args.timeout * 1e6)
    elif setup.ops_name == "sim" and state is None:  # background monitors run until stopped
        duration_us = _default_sim_duration_us(setup)
    error: BaseException | None = None
    wall_start = time.monotonic()
    try:
        ctx.run(duration_us=duration_us)
        monitored = ctx.clock.now_us() - progress.monitor_start_us
        if stop_reason[0] == "target ended":
            # the operations set may notice the exit before our own check does
            if setup.process is not None and setup.process.poll() is not None:
                stop_reason[0] = f"command exited ({setup.process.returncode})"
            elif setup.process is None and setup.pid is not None and not pid_alive(setup.pid):
                stop_reason[0] = f"process {setup.pid} exited"
            elif duration_us and monitored >= duration_us:
                stop_reason[0] = "timeout"
    except BaseException as err:  # finalize the record whatever ended the loop
        error = err
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        progress.update(ctx, recorder.nr_snapshots, force=True)
        progress.done()
        recorder.close({"stop_reason": stop_reason[0], "achieved": achieved(ctx)})
        if setup.process is not None and setup.process.poll() is None:
            setup.process.terminate()
            try:
                setup.process.wait(5)
            except Exception:
                setup.process.kill()
    if error is not None:
        if isinstance(error, KeyboardInterrupt):
            stop_reason[0] = "SIGINT"
        elif isinstance(error, FeatureMissing):
            _drop_empty(recorder, out, stream_path)
            raise CliError(f"monitoring failed: {error}", EXIT_UNSUPPORTED) from None
        elif isinstance(error, PermissionError):
            _drop_empty(recorder, out, stream_path)
            raise CliError(
                f"monitoring failed: {error}; run as root (sudo) or with CAP_SYS_ADMIN", 3
            ) from None
        elif isinstance(error, OSError | ValueError | RuntimeError):
            _drop_empty(recorder, out, stream_path)
            raise CliError(f"monitoring failed: {error}") from None
        else:
            raise error
    if args.output_type != "pydamon":
        try:
            export_record(read_record(stream_path), out, args.output_type)
            os.chmod(out, mode)
        except (OSError, ValueError, MemoryError, RuntimeError) as err:
            why = "out of memory" if isinstance(err, MemoryError) else str(err)
            raise CliError(
                f"writing {args.output_type} failed ({why}); the record is kept in {stream_path}"
                f" (a pydamon record: 'pydamon report ... -i {stream_path}', 'pydamon convert "
                f"{stream_path} -o {out}')"
            ) from None
        os.unlink(stream_path)
    summary = {
        "output": out,
        "output_type": args.output_type,
        "nr_snapshots": recorder.nr_snapshots,
        "monitored_us": ctx.clock.now_us() - progress.monitor_start_us,
        "wall_s": round(time.monotonic() - wall_start, 3),
        "monitor_cpu_s": round(ctx.monitor_cpu_s, 3),
        "achieved": achieved(ctx),
        "stop_reason": stop_reason[0],
        "file_bytes": os.path.getsize(out),
    }
    if args.json:
        print(json.dumps(summary))
    elif not args.quiet and state is None:
        print(
            f"recorded {summary['nr_snapshots']} snapshots "
            f"({format_duration_us(summary['monitored_us'])} monitored, "
            f"stopped: {summary['stop_reason']}) to {out} "
            f"({format_bytes(summary['file_bytes'])}); monitor CPU {summary['monitor_cpu_s']} s"
            f"{_budget_note(summary['achieved'])}",
            file=sys.stderr,
        )
    return 0


def _budget_note(done: dict[str, Any]) -> str:
    """What a CPU budget did to the intervals, for the closing line ("" if nothing)."""
    budget = done.get("cpu_budget")
    if not budget or budget["sample_interval_us"] == budget["asked_sample_interval_us"]:
        return ""
    return (
        f" (CPU budget {budget['cpu_budget_percent']:g}%: sampling "
        f"{format_duration_us(budget['asked_sample_interval_us'])} stretched to "
        f"{format_duration_us(budget['sample_interval_us'])}, max_nr_regions "
        f"{budget['max_nr_regions']})"
    )
