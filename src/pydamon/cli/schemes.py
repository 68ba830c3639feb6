"""``pydamon schemes``: run DAMOS schemes against a process, a command, physical memory or a
simulated workload, with live per-scheme statistics."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from pydamon.cli.common import (
    add_monitoring_options,
    add_target_options,
    attrs_from_args,
    is_tty,
    make_context,
    positive_seconds,
    setup_targets,
)
from pydamon.cli.main import EXIT_USAGE, CliError, failure_exit_code
from pydamon.runstate import pid_alive
from pydamon.units import explain, format_bytes, format_duration_us, parse_duration, parse_size

EPILOG = """\
examples:
  pydamon schemes --sim hotcold --damos_action pageout --damos_access_rate 0 0 --damos_age 5s max
  pydamon schemes --sim hotcold --schemes schemes.json --timeout 60 --json
  sudo pydamon schemes -p $(pidof myapp) --schemes cold.txt
  sudo pydamon schemes --damos_action cold --damos_sz_region 4K max \\
       --damos_quotas 10ms 128M 1s -- ./prog
  (scheme files: damo's one-line text form, JSON or YAML: 'pydamon schemes --help-format')
"""

FORMAT_HELP = """\
Scheme files (--schemes FILE; the form by extension .txt/.json/.yaml, else by content)

TEXT: damo's one-line form, one scheme per line, '#' comments:
  <min size> <max size> <min freq %> <max freq %> <min age> <max age> <action>
      [<quota time> <quota size> <quota reset interval>
       <size weight> <nr_accesses weight> <age weight>
       <watermark metric> <watermark interval> <high> <mid> <low>]      (7 or 18 fields)
  4K  max 0  0   60s   max pageout
  2M  max 90 100 100ms max hugepage 10ms 1G 1s 0 3 7 free_mem_rate 5s 500 400 200
  (damo's 9, 12 and 17-field forms, without the quota time, are read too)

JSON / YAML: a list of schemes (or {"schemes": [...]}, or damo's whole kdamonds document):
  [{"action": "pageout",
    "access_pattern": {"sz_bytes": {"min": "4K", "max": "max"},
                       "nr_accesses": {"min": 0, "max": 0},
                       "age": {"min": "60s", "max": "max"}},
    "apply_interval_us": 0,
    "quotas": {"time_ms": 10, "sz_bytes": "128M", "reset_interval_ms": "1s",
               "weights": {"sz_permil": 0, "nr_accesses_permil": 0, "age_permil": 1000},
               "goals": [{"metric": "some_mem_psi_us", "target_value": "1ms"}]},
    "watermarks": {"metric": "free_mem_rate", "interval_us": "5s",
                   "high_permil": 500, "mid_permil": 400, "low_permil": 200},
    "filters": [{"filter_type": "anon", "matching": true, "allow": false}]}]
  A missing part keeps its default (match all, no quota, no watermarks, no filters); a key
  that is not damo's is an error naming the closest one, so a typo never widens a scheme.

Values: sizes 4096, 4K, 2MiB, 0x1000; times 500us, 100ms, 60s, 1h 30m (bare: us for ages
and watermark intervals, ms for quota times); percentages 0..100 (80 or 80%); watermarks
0..1000 per mille (high >= mid >= low); 'min'/'max' bound a range. nr_accesses in percent and
ages in us unless nr_accesses_unit: samples / age_unit: aggr_intervals (or "5 samples").
Actions: willneed cold pageout hugepage nohugepage lru_prio lru_deprio migrate_hot
migrate_cold stat collapse. Filter types: anon active memcg young hugepage_size unmapped addr
target. More: docs/damos.md.
"""


class _FormatHelp(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(FORMAT_HELP, end="")
        parser.exit()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "schemes",
        help="apply DAMOS schemes to a target, with live stats",
        description="Monitor a target and apply DAMOS schemes (from a file or options).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_target_options(p)
    add_monitoring_options(p)
    g = p.add_argument_group("schemes (a file, or one scheme from damo-like options)")
    g.add_argument("--schemes", metavar="FILE", help="scheme file: damo text lines, JSON or YAML")
    g.add_argument("--help-format", action=_FormatHelp, help="show the scheme file format and exit")
    g.add_argument("--damos_action", metavar="ACTION", help="e.g. pageout, cold, hugepage, stat")
    g.add_argument("--damos_access_rate", nargs=2, metavar=("MIN", "MAX"),
                   help="access rate range in percent (default 0 100)")  # fmt: skip
    g.add_argument("--damos_sz_region", nargs=2, metavar=("MIN", "MAX"),
                   help="region size range (default min max)")  # fmt: skip
    g.add_argument("--damos_age", nargs=2, metavar=("MIN", "MAX"),
                   help="age range, e.g. 5s max (default min max)")  # fmt: skip
    g.add_argument("--damos_quotas", nargs=3, metavar=("TIME", "SIZE", "RESET"),
                   help="time quota, size quota, reset interval (e.g. 10ms 128M 1s)")  # fmt: skip
    o = p.add_argument_group("run")
    o.add_argument("--timeout", type=positive_seconds, metavar="SECONDS",
                   help="stop after this long (monitor time; default 10 s for --sim)")  # fmt: skip
    o.add_argument("-o", "--record", metavar="FILE", help="also record the snapshots")
    o.add_argument("-q", "--quiet", action="store_true", help="no live stats line")
    o.add_argument("--json", action="store_true", help="final stats as JSON")
    p.set_defaults(func=run)


def schemes_from_args(args: argparse.Namespace) -> list[Any]:
    if args.schemes and args.damos_action:
        raise CliError("give --schemes FILE or --damos_action, not both", EXIT_USAGE)
    if args.schemes:
        return load_scheme_file(args.schemes)
    if not args.damos_action:
        raise CliError("no scheme: give --schemes FILE or --damos_action ACTION", EXIT_USAGE)
    return [scheme_from_options(args)]


#: The option that sets a scheme field (damo's JSON layout names, as in a SchemeError).
_OPTION_OF = {
    "access_pattern.sz_bytes": "--damos_sz_region",
    "access_pattern.nr_accesses": "--damos_access_rate",
    "access_pattern.age": "--damos_age",
    "quotas.time_ms": "--damos_quotas TIME",
    "quotas.sz_bytes": "--damos_quotas SIZE",
    "quotas.reset_interval_ms": "--damos_quotas RESET",
}


def scheme_from_options(args: argparse.Namespace) -> Any:
    """One scheme from the ``--damos_*`` options; errors name the option."""
    from pydamon.damos import AccessPattern, Quota, Scheme, SchemeError
    from pydamon.damos.fields import read_percent, read_size, read_us
    from pydamon.damos.kinds import AgeUnit, NrAccessesUnit, parse_action

    def value(option: str, text: str, parse: Callable[[str], Any]) -> Any:
        try:
            return parse(text)
        except ValueError as err:
            raise CliError(f"bad {option}: {explain(text, err)}", EXIT_USAGE) from None

    sz = args.damos_sz_region or ["min", "max"]
    rate = args.damos_access_rate or ["0", "100"]
    age = args.damos_age or ["min", "max"]
    pattern = AccessPattern(
        min_sz_bytes=value("--damos_sz_region MIN", sz[0], read_size),
        max_sz_bytes=value("--damos_sz_region MAX", sz[1], read_size),
        min_nr_accesses=value("--damos_access_rate MIN", rate[0], read_percent),
        max_nr_accesses=value("--damos_access_rate MAX", rate[1], read_percent),
        nr_accesses_unit=NrAccessesUnit.PERCENT,
        min_age=value("--damos_age MIN", age[0], read_us),
        max_age=value("--damos_age MAX", age[1], read_us),
        age_unit=AgeUnit.USEC,
    )
    quota = Quota()
    if args.damos_quotas:
        # as in a scheme line, a quota may be min or max (damo's text_to_ms and text_to_bytes)
        t, s, r = args.damos_quotas
        quota.ms = _quota_arg("TIME", t, parse_duration, "ms")
        quota.sz = _quota_arg("SIZE", s, parse_size)
        quota.reset_interval_ms = _quota_arg("RESET", r, parse_duration, "ms")
    action = value("--damos_action", args.damos_action, parse_action)
    try:
        return Scheme(pattern=pattern, action=action, quota=quota)
    except SchemeError as err:
        option = _OPTION_OF.get(err.field or "", "scheme options")
        raise CliError(f"bad {option}: {err}", EXIT_USAGE) from None


def _quota_arg(name: str, text: str, parse: Callable[..., int], *args: str) -> int:
    try:
        return parse(text, *args, allow_keywords=True)
    except ValueError as err:
        raise CliError(f"bad --damos_quotas {name}: {explain(text, err)}", EXIT_USAGE) from None


def load_scheme_file(path: str) -> list[Any]:
    """The schemes of a file (text, JSON or YAML); a missing or bad file is bad input (exit 1)."""
    import os

    from pydamon import damos

    if not os.path.isfile(path):
        raise CliError(f"no such scheme file: {path}")
    try:
        schemes = list(damos.load_schemes(path))
    except (OSError, ValueError) as err:
        msg = str(err) if path in str(err) else f"{path}: {err}"
        raise CliError(f"bad scheme file {msg}") from None
    if not schemes:
        raise CliError(f"{path} defines no scheme")
    return schemes


def stats_rows(ctx: Any) -> list[dict[str, Any]]:
    rows = []
    for i, s in enumerate(ctx.schemes):
        st = s.stats
        rows.append(
            {
                "scheme": i,
                "action": str(getattr(s.action, "value", s.action)),
                "nr_tried": st.nr_tried,
                "sz_tried": st.sz_tried,
                "nr_applied": st.nr_applied,
                "sz_applied": st.sz_applied,
                "sz_ops_filter_passed": st.sz_ops_filter_passed,
                "qt_exceeds": st.qt_exceeds,
                "wmarks_active": bool(getattr(s, "wmarks_activated", True)),
            }
        )
    return rows


def run(args: argparse.Namespace) -> int:
    attrs = attrs_from_args(args)
    schemes = schemes_from_args(args)
    setup = setup_targets(args)
    ctx = make_context(
        setup,
        attrs,
        args.seed,
        getattr(args, "sim_speed", None),
        getattr(args, "cpu_budget", None),
    )
    ctx.set_schemes(schemes)
    recorder = None
    if args.record:
        from pydamon.record.recorder import Recorder

        recorder = Recorder(ctx, args.record, meta={"ops": setup.ops_name},
                            footprints=setup.ops_name != "sim")  # fmt: skip
    live = is_tty() and not args.quiet
    last = [0.0]
    start_us = ctx.clock.now_us()

    def show(c: Any) -> None:
        if setup.process is not None and setup.process.poll() is not None:
            c.stop()
            return
        if setup.process is None and setup.pid is not None and not pid_alive(setup.pid):
            c.stop()
            return
        now = time.monotonic()
        if live and now - last[0] >= 0.5:
            last[0] = now
            parts = [
                f"#{r['scheme']} {r['action']}: applied {format_bytes(r['sz_applied'])} "
                f"of {format_bytes(r['sz_tried'])} tried"
                for r in stats_rows(c)
            ]
            line = f"\r{format_duration_us(c.clock.now_us() - start_us)}: " + "; ".join(parts)
            sys.stderr.write(line[:150].ljust(100))
            sys.stderr.flush()

    ctx.add_callback("after_aggregation", show)
    old = {s: signal.signal(s, lambda *_: ctx.stop()) for s in (signal.SIGINT, signal.SIGTERM)}
    duration = int(args.timeout * 1e6) if args.timeout else None
    if duration is None and setup.ops_name == "sim":
        duration = 10_000_000
    try:
        ctx.run(duration_us=duration)
    except (OSError, RuntimeError, NotImplementedError, ValueError) as err:
        raise CliError(f"applying schemes failed: {err}", failure_exit_code(err)) from None
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if live:
            sys.stderr.write("\n")
        if recorder is not None:
            recorder.close()
        if setup.process is not None and setup.process.poll() is None:
            setup.process.terminate()
    rows = stats_rows(ctx)
    if args.json:
        print(json.dumps({"monitored_us": ctx.clock.now_us() - start_us, "schemes": rows}))
        return 0
    print(f"# {format_duration_us(ctx.clock.now_us() - start_us)} monitored, "
          f"{ctx.nr_aggregations} aggregations")  # fmt: skip
    print(f"{'#':>3} {'action':<12} {'nr_tried':>9} {'sz_tried':>14} {'nr_applied':>10} "
          f"{'sz_applied':>14} {'qt_exceeds':>10}")  # fmt: skip
    for r in rows:
        print(
            f"{r['scheme']:>3} {r['action']:<12} {r['nr_tried']:>9} "
            f"{format_bytes(r['sz_tried']):>14} {r['nr_applied']:>10} "
            f"{format_bytes(r['sz_applied']):>14} {r['qt_exceeds']:>10}"
        )
    return 0
