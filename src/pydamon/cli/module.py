"""``pydamon module``: run access-aware policy modules (built-in or your own file).

    pydamon module list
    pydamon module params NAME
    pydamon module run NAME [--param value ...] [--duration S] [--format text|json]
    pydamon module start NAME [--instance I] [--param value ...]
    pydamon module status [INSTANCE] [--json]
    pydamon module set INSTANCE --param value ...
    pydamon module stop INSTANCE

Module parameters are given as ``--min-age 30s`` or ``min_age=30s``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import typing
from pathlib import Path
from typing import Any

from pydamon.cli.main import EXIT_FAILURE, CliError, failure_exit_code
from pydamon.modules import BUILTIN_MODULES, Module, ModuleError, ParamError, load_module
from pydamon.modules.runner import ModuleRunner, ServiceFiles, default_run_dir, serve

_MAIN = "import sys; from pydamon.cli.main import main; sys.exit(main(sys.argv[1:]))"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "module",
        help="run access-aware policy modules (stat, reclaim, lru_sort, thp, or your own)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    msub = p.add_subparsers(dest="module_command", metavar="ACTION")

    q = msub.add_parser("list", help="list the built-in modules")
    q.set_defaults(func=cmd_list)

    q = msub.add_parser("params", help="show a module's parameters, defaults and units")
    q.add_argument("module", help="built-in module name or path of a module file")
    q.set_defaults(func=cmd_params)

    for action, helptext in (
        ("run", "run a module in the foreground (Ctrl-C / SIGTERM stops it cleanly)"),
        ("start", "start a module as a background service"),
    ):
        q = msub.add_parser(
            action,
            help=helptext,
            description=f"{helptext[0].upper()}{helptext[1:]}. "
            f"'pydamon module {action} NAME --help' lists NAME's parameters.",
            epilog=RUN_EPILOG.format(action=action),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        q.add_argument("module", help="built-in module name or path of a module file")
        q.add_argument(
            "params", nargs=argparse.REMAINDER, help="--param value ... (or param=value)"
        )
        add_runner_options(q.add_argument_group("runner options (before or after NAME)"))
        q.set_defaults(func=cmd_run if action == "run" else cmd_start)

    q = msub.add_parser("status", help="show running module instances, their params and stats")
    q.add_argument("instance", nargs="?")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.add_argument("--run-dir", type=Path, default=None)
    q.set_defaults(func=cmd_status)

    q = msub.add_parser("set", help="change parameters of a running module (applied online)")
    q.add_argument("instance")
    q.add_argument("params", nargs=argparse.REMAINDER, help="--param value ...")
    q.set_defaults(func=cmd_set)

    q = msub.add_parser("stop", help="stop a running module instance (SIGTERM, clean stop)")
    q.add_argument("instance")
    q.add_argument("--run-dir", type=Path, default=None)
    q.set_defaults(func=cmd_stop)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


RUN_EPILOG = """\
examples:
  pydamon module {action} stat --ops sim --workload hotcold --duration 30
  sudo pydamon module {action} reclaim --ops vaddr --pid 1234 --min-age 30s [--instance web]
  pydamon module {action} reclaim --help    # the module's parameters, units and defaults
"""


# -- argument helpers ------------------------------------------------------------------------------
class _RunnerOptionError(Exception):
    pass


class _RunnerOptions(argparse.ArgumentParser):
    """The runner options among a module's parameters; a bad one raises, not exits."""

    def error(self, message: str) -> typing.NoReturn:
        raise _RunnerOptionError(message)


def _seconds(text: str) -> float:
    from pydamon.cli.common import positive_seconds

    return positive_seconds(text)


def _seconds_or_zero(text: str) -> float:
    from pydamon.cli.common import seconds_or_zero

    return seconds_or_zero(text)


def add_runner_options(g: Any) -> None:
    """How ``module run``/``start`` run a module (the rest of the words are its parameters)."""
    from pydamon.cli.common import add_cpu_budget_option

    add_cpu_budget_option(g)
    g.add_argument("--instance", default=None, help="instance name (default: the module's)")
    g.add_argument(
        "--run-dir", type=Path, default=None, help="where instances keep their state files"
    )
    g.add_argument(
        "--duration", type=_seconds, default=None, metavar="S", help="stop after S seconds"
    )
    g.add_argument("--format", choices=("text", "json"), default="text", help="stats output (text)")
    g.add_argument(
        "--backend",
        choices=("auto", "kernel", "user"),
        default="auto",
        help="engine: a pydamon-owned kdamond of the kernel's DAMON (never the kernel modules'"
        " parameters), pydamon's user-space one, or auto (default)",
    )
    g.add_argument(
        "--damon-root",
        dest="damon_root",
        metavar="DIR",
        default=os.environ.get("PYDAMON_DAMON_ROOT") or "/sys/kernel/mm/damon/admin",
        help="DAMON sysfs directory of the kernel backend",
    )
    g.add_argument(
        "--report-interval",
        type=_seconds_or_zero,
        default=None,
        metavar="S",
        help="print the stats every S seconds of wall time (0: never; default per module)",
    )


def _runner_options() -> argparse.ArgumentParser:
    ro = _RunnerOptions(add_help=False, allow_abbrev=False)
    add_runner_options(ro)
    return ro


def split_params(
    words: list[str], given: argparse.Namespace | None = None
) -> tuple[argparse.Namespace, dict[str, str]]:
    """Runner options (over those ``given`` before the module name) and ``{param: text}`` from
    ``--name value`` / ``--name=value`` / ``name=value`` words."""
    base = argparse.Namespace(
        **{
            k: getattr(given, k)
            for k in (
                "instance",
                "run_dir",
                "duration",
                "format",
                "report_interval",
                "backend",
                "damon_root",
                "cpu_budget",
            )
            if hasattr(given, k)
        }  # fmt: skip
    )
    try:
        opts, rest = _runner_options().parse_known_args(words, namespace=base)
    except _RunnerOptionError as err:
        raise CliError(f"{err} (see 'pydamon module run --help')", 2) from None
    params: dict[str, str] = {}
    i = 0
    while i < len(rest):
        word = rest[i]
        if word.startswith("--"):
            key = word[2:]
            if "=" in key:
                key, value = key.split("=", 1)
            elif i + 1 < len(rest):
                i += 1
                value = rest[i]
            else:
                raise CliError(f"parameter --{key} needs a value", 2)
        elif "=" in word:
            key, value = word.split("=", 1)
        else:
            raise CliError(f"unexpected argument {word!r}: give parameters as --name value", 2)
        params[key.replace("-", "_")] = value
        i += 1
    return opts, params


def _load(ref: str) -> type[Module]:
    try:
        return load_module(ref)
    except ModuleError as err:
        raise CliError(str(err)) from None


def _instance_files(run_dir: Path | None, instance: str) -> ServiceFiles:
    try:
        return ServiceFiles(run_dir or default_run_dir(), instance)
    except ModuleError as err:
        raise CliError(str(err), 2) from None


def _print_stats(module: Module, status: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(status, sort_keys=True), flush=True)
        return
    ctx = ", ".join(
        f"{c['ops']} {c['nr_regions']} regions, {c['nr_aggregations']} aggregations, "
        f"sample {c['sample_interval_us']} us, aggr {c['aggr_interval_us']} us"
        for c in status["contexts"]
    )
    print(f"# {module.name}: {ctx}", flush=True)
    text = module.format_stats(status["stats"])
    if text:
        print(text, flush=True)


# -- commands --------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    for name in BUILTIN_MODULES:
        cls = _load(name)
        print(f"{name:10s} {cls.description}")
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    cls = _load(args.module)
    print(f"{cls.name}: {cls.description}")
    for p in cls.params:
        print(f"  --{p.name.replace('_', '-')}  {p.describe()}")
    return 0


def _wants_help(words: list[str]) -> bool:
    return any(w in ("-h", "--help") for w in words)


def _module_help(ref: str, action: str) -> int:
    """``pydamon module run NAME --help``: NAME's parameters and the runner options."""
    cls = _load(ref)
    lines = [f"{cls.name}: {cls.description}", "", "parameters (--name value or name=value):"]
    lines += [f"  --{p.name.replace('_', '-')}  {p.describe()}" for p in cls.params]
    parser = argparse.ArgumentParser(
        prog=f"pydamon module {action} {ref}",
        usage="%(prog)s [runner options] [--PARAM VALUE ...]",
        description="\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=False,
    )
    add_runner_options(parser.add_argument_group("runner options"))
    parser.print_help()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if _wants_help(args.params):
        return _module_help(args.module, "run")
    opts, params = split_params(args.params, args)
    cls = _load(args.module)
    ref = os.path.abspath(args.module) if args.module not in BUILTIN_MODULES else args.module
    try:
        module = cls(backend=opts.backend, damon_root=opts.damon_root, **params)
    except ParamError as err:
        raise CliError(str(err), 2) from None
    files = _instance_files(opts.run_dir, opts.instance or module.name)
    try:
        files.claim()
    except ModuleError as err:
        raise CliError(str(err)) from None
    runner = ModuleRunner(module, duration_s=opts.duration, ref=ref, cpu_budget=opts.cpu_budget)
    interval = cls.report_interval_s if opts.report_interval is None else opts.report_interval
    try:
        _say_backend_when_monitoring(module)
        try:
            runner.start()
        except (ModuleError, ParamError) as err:
            raise CliError(str(err)) from None
        serve(
            runner,
            files,
            on_report=lambda st: _print_stats(module, st, opts.format),
            report_interval_s=interval,
        )
    except (ModuleError, ParamError) as err:
        raise CliError(str(err)) from None
    except CliError:
        raise
    except Exception as err:  # what ended a monitoring loop (e.g. a target's memory vanished)
        what = str(err) if isinstance(err, OSError | ValueError) else f"{type(err).__name__}: {err}"
        raise CliError(f"monitoring stopped: {what}", failure_exit_code(err)) from None
    finally:
        files.release()
    return 0


def _say_backend_when_monitoring(module: Module) -> None:
    """Once the module's first context monitors, say on which backend (one line on stderr)."""
    from pydamon.cli.engine import say_when_monitoring

    build = module.build

    def build_and_say() -> list[Any]:
        contexts = build()
        if contexts and module.p.as_dict().get("ops") != "sim":
            line = f"pydamon: backend {module.backend_used}: {module.backend_reason}"
            say_when_monitoring(contexts[0], line)
        return contexts

    module.build = build_and_say  # type: ignore[method-assign]


def cmd_start(args: argparse.Namespace) -> int:
    if _wants_help(args.params):
        return _module_help(args.module, "start")
    opts, params = split_params(args.params, args)
    cls = _load(args.module)
    try:
        module_probe = cls.parse_params(params)  # fail here, with the error, not in the log
    except ParamError as err:
        raise CliError(str(err), 2) from None
    del module_probe
    ref = os.path.abspath(args.module) if args.module not in BUILTIN_MODULES else args.module
    instance = opts.instance or cls.name
    run_dir = opts.run_dir or default_run_dir()
    files = _instance_files(run_dir, instance)
    pid = files.running_pid()
    if pid is not None:
        raise CliError(f"module instance {instance} already runs (pid {pid})")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CliError(f"cannot create run directory {run_dir}: {err.strerror}") from None
    files.path("status.json").unlink(missing_ok=True)
    # Not "-m pydamon.cli.main": that would load the CLI twice (as __main__ and as imported by
    # this module), with two CliError classes.
    cmd = [sys.executable, "-c", _MAIN, "module", "run", ref]
    cmd += ["--instance", instance, "--run-dir", str(run_dir), "--report-interval", "0"]
    if opts.duration is not None:
        cmd += ["--duration", str(opts.duration)]
    if opts.cpu_budget is not None:
        cmd += ["--cpu-budget", str(opts.cpu_budget)]
    for key, value in params.items():
        cmd += [f"--{key}", value]
    with open(files.log_file, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = files.read_status()
        if status is not None and status.get("pid") == proc.pid:
            print(f"started {instance} (pid {proc.pid}); log: {files.log_file}")
            return 0
        if proc.poll() is not None:
            raise CliError(f"{instance} failed to start: {_last_line(files.log_file)}")
        time.sleep(0.05)
    raise CliError(f"{instance} did not report within 30 s; see {files.log_file}")


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"


def cmd_status(args: argparse.Namespace) -> int:
    run_dir = args.run_dir or default_run_dir()
    if args.instance:
        instances = [args.instance]
    else:
        instances = sorted(p.name[: -len(".pid")] for p in run_dir.glob("*.pid"))
    found = []
    for instance in instances:
        files = _instance_files(run_dir, instance)
        pid = files.running_pid()
        status = files.read_status()
        if pid is None or status is None or status.get("pid") != pid:
            if args.instance:
                raise CliError(f"module instance {instance} is not running", EXIT_FAILURE)
            continue
        found.append(status)
    if args.json:
        print(json.dumps(found if not args.instance else found[0], indent=1, sort_keys=True))
        return 0
    if not found:
        print(f"no module instance runs (run directory {run_dir})")
        return 0
    for status in found:
        age = time.time() - status["started_at"]
        print(f"{status['instance']}: module {status['ref']}, pid {status['pid']}, up {age:.0f} s")
        params = " ".join(f"{k}={v}" for k, v in status["params"].items())
        print(f"  params: {params}")
        try:
            module = _load(status["ref"])
            text = module.format_stats(status["stats"])
        except CliError:
            text = json.dumps(status["stats"])
        for line in text.splitlines():
            print(f"  {line}")
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    if _wants_help(args.params):
        print("give the parameters to change as --name value; 'pydamon module status "
              f"{args.instance}' shows them, 'pydamon module params NAME' their units")  # fmt: skip
        return 0
    opts, params = split_params(args.params)
    if not params:
        raise CliError("give at least one parameter to change (--name value)", 2)
    files = _instance_files(opts.run_dir, args.instance)
    status = files.read_status()
    if files.running_pid() is None or status is None:
        raise CliError(f"module instance {args.instance} is not running")
    cls = _load(status["ref"])
    for key in params:
        try:
            cls.param(key)
        except ParamError as err:
            raise CliError(str(err), 2) from None
    try:
        ack = files.send_params(params)
    except ModuleError as err:
        raise CliError(str(err)) from None
    if not ack.get("ok"):
        raise CliError(str(ack.get("error")), 2)
    changed = " ".join(f"{k}={ack['params'][k]}" for k in params)
    print(f"{args.instance}: applied {changed}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    files = _instance_files(args.run_dir, args.instance)
    try:
        pid = files.terminate()
    except ModuleError as err:
        raise CliError(str(err)) from None
    print(f"stopped {args.instance} (pid {pid})")
    return 0
