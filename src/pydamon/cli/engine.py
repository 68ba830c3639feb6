"""The CLI's choice of engine: ``--backend auto|kernel|user`` and ``--damon-root DIR``.

Monitoring commands build their context here (:func:`make_cli_context`): the user-space engine
(:class:`pydamon.core.Context`) or the kernel's DAMON on a kdamond of pydamon's pool
(:class:`pydamon.backend.KernelEngineContext`), and say in one line on stderr which one and
why, once monitoring runs. ``status`` and ``stop`` find pool kdamonds whose pydamon died
(``kill -9``) through :func:`orphan_slots`.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any

__all__ = [
    "add_backend_options",
    "make_cli_context",
    "ops_of",
    "orphan_slots",
    "say_when_monitoring",
    "stop_orphans",
]

from pydamon.backend import BACKENDS, BackendError, KernelEngineContext, choose_backend, ops_of
from pydamon.cli.main import EXIT_USAGE, CliError
from pydamon.core.errors import FeatureMissing
from pydamon.kernel.pool import KdamondPool, PoolSlot
from pydamon.kernel.sysfs import DamonSysfs
from pydamon.kernel.sysfs_common import DEFAULT_ROOT, KernelSysfsError
from pydamon.kernel.tracefs import TRACEFS_MOUNTS


def add_backend_options(p: argparse.ArgumentParser, *, monitoring: bool = True) -> None:
    g = p.add_argument_group("backend")
    if monitoring:
        g.add_argument(
            "--backend",
            choices=BACKENDS,
            default="auto",
            help="engine: the kernel's DAMON, pydamon's user-space one, or auto (the kernel when"
            " it has what is needed and no foreign kdamond exists; default auto)",
        )
    else:
        g.add_argument(
            "--backend",
            choices=BACKENDS,
            default="auto",
            help="which monitors to look at: kernel (pydamon's kdamonds) or user; default both",
        )
    g.add_argument(
        "--damon-root",
        dest="damon_root",
        metavar="DIR",
        default=os.environ.get("PYDAMON_DAMON_ROOT") or DEFAULT_ROOT,
        help="DAMON sysfs directory of the kernel backend (default $PYDAMON_DAMON_ROOT, else "
        f"{DEFAULT_ROOT})",
    )


@dataclass
class BackendInfo:
    backend: str
    reason: str
    damon_root: str

    def meta(self) -> dict[str, str]:
        return {
            "backend": self.backend,
            "backend_reason": self.reason,
            "damon_root": self.damon_root,
        }


def make_cli_context(
    args: argparse.Namespace, setup: Any, attrs: Any, schemes: Any = ()
) -> tuple[Any, BackendInfo]:
    """The context of a monitoring command and which backend it runs on (said on stderr)."""
    from pydamon.cli.common import make_context

    kind = getattr(args, "backend", "user") or "auto"
    root = getattr(args, "damon_root", DEFAULT_ROOT) or DEFAULT_ROOT
    try:
        if setup.ops_name == "sim" and kind != "kernel":
            backend, reason = "user", "the simulated address space (--sim) runs in pydamon"
        else:
            backend, reason = choose_backend(
                kind, setup.ops_name, attrs, setup.targets, schemes, damon_root=root
            )
    except BackendError as err:
        raise CliError(str(err), EXIT_USAGE) from None
    info = BackendInfo(backend, reason, root)
    ctx: Any
    if backend == "user":
        ctx = make_context(
            setup,
            attrs,
            args.seed,
            getattr(args, "sim_speed", None),
            getattr(args, "cpu_budget", None),
        )
        if schemes:
            ctx.set_schemes(schemes)
    else:
        ctx = KernelEngineContext(
            setup.ops_name, setup.targets, attrs, schemes=list(schemes), root=root,
            pool=KdamondPool(),
        )  # fmt: skip
    if setup.ops_name != "sim":  # a simulation has no choice (the record's metadata says so)
        say_when_monitoring(ctx, f"pydamon: backend {backend}: {reason}")
    return ctx, info


def _emulated_note(ctx: Any) -> str:
    """ "; pydamon runs on top: ..." for what the kernel lacks and pydamon emulates ("" if none)."""
    emulation = getattr(ctx, "emulation", None)
    if emulation is None or not emulation.any:
        return ""
    return f"; pydamon runs on top: {', '.join(emulation.describe())}"


def say_when_monitoring(ctx: Any, line: str) -> None:
    """Print ``line`` once monitoring runs (so that an error before stays the only line), with
    what pydamon runs on top of the kernel, known by then."""
    ops = ops_of(ctx)
    init = ops.init

    def init_then_say(c: Any) -> None:
        init(c)
        print(line + _emulated_note(ctx), file=sys.stderr)

    ops.init = init_then_say


def orphan_slots(root: str) -> list[PoolSlot]:
    """pydamon's pool kdamonds at ``root`` (reads only); [] where there is no DAMON sysfs."""
    try:
        return KdamondPool().slots_of(DamonSysfs(root))
    except (FeatureMissing, KernelSysfsError, OSError):
        return []


def stop_orphans(root: str) -> list[PoolSlot]:
    """Turn off the kdamonds whose pydamon died; a one-line error on failure."""
    try:
        stopped = KdamondPool().stop_orphans(DamonSysfs(root))
    except PermissionError:
        raise CliError(f"no permission to stop kdamonds at {root}; use sudo", 3) from None
    except (FeatureMissing, KernelSysfsError, OSError) as err:
        raise CliError(f"cannot stop orphan kdamonds at {root}: {err}") from None
    if root == DEFAULT_ROOT:  # the real kernel's: its pydamon's trace instance is left too
        for slot in stopped:
            for mount in TRACEFS_MOUNTS:
                instance = os.path.join(mount, "instances", f"pydamon-{slot.owner_pid}")
                if os.path.isdir(instance):
                    try:
                        os.rmdir(instance)  # tracefs removes an instance with rmdir
                    except OSError as err:
                        print(f"pydamon: cannot remove {instance}: {err}", file=sys.stderr)
    return stopped


def describe_slot(slot: PoolSlot) -> str:
    if slot.orphan:
        return (
            f"kdamond {slot.index} at {slot.root}: orphan (its pydamon, pid {slot.owner_pid}, is "
            f"gone), state {slot.state}, kdamond pid {slot.kdamond_pid}; 'pydamon stop' ends it"
        )
    who = f"pydamon pid {slot.owner_pid}" if slot.owner_pid else "free"
    return f"kdamond {slot.index} at {slot.root}: {who}, state {slot.state}"
