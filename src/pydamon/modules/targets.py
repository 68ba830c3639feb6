"""What a module monitors: parameters and construction shared by the ready modules.

``ops`` picks the operations set: ``paddr`` (physical memory, the kernel modules' default),
``vaddr`` (a process ``pid``, or every process of a ``cgroup``: one target each) or ``sim`` (a
named simulated ``workload``). The operations sets are looked up by name in
:mod:`pydamon.ops`, so a missing one gives a one-line error instead of an import failure.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import pydamon.ops  # noqa: F401 - registers the operations sets
from pydamon.core import Target
from pydamon.core.operations import Operations, OperationsUnavailable, operations_class
from pydamon.modules.base import ModuleError, Param, ParamError, Params

#: Common parameters selecting what to monitor (fixed while a module runs).
TARGET_PARAMS: tuple[Param, ...] = (
    Param(
        "ops",
        str,
        "paddr",
        "operations set: paddr (physical memory), vaddr (pid or cgroup), sim (simulation)",
        choices=("paddr", "vaddr", "sim"),
        online=False,
    ),
    Param("pid", int, None, "process to monitor (vaddr)", optional=True, min=1, online=False),
    Param(
        "cgroup",
        str,
        None,
        "cgroup v2 path whose processes to monitor (vaddr), e.g. /sys/fs/cgroup/app",
        optional=True,
        online=False,
    ),
    Param("workload", str, "hotcold", "named simulated workload (sim)", online=False),
    Param(
        "sim_size",
        int,
        None,
        "mapped size of the simulated workload (sim; default 1G)",
        unit="bytes",
        optional=True,
        online=False,
    ),
    Param("seed", int, None, "random seed (sim: reproducible runs)", optional=True, online=False),
    Param(
        "monitor_region_start",
        int,
        None,
        "start of the address range to monitor (paddr: default biggest System RAM; vaddr: "
        "a fixed range of the process, as fvaddr)",
        unit="bytes",
        optional=True,
        online=False,
    ),
    Param(
        "monitor_region_end",
        int,
        None,
        "end of the address range to monitor",
        unit="bytes",
        optional=True,
        online=False,
    ),
)


def target_params(default_ops: str) -> tuple[Param, ...]:
    """:data:`TARGET_PARAMS` with another default operations set (modules of virtual memory)."""
    return tuple(replace(p, default=default_ops) if p.name == "ops" else p for p in TARGET_PARAMS)


def check_target_params(p: Params) -> None:
    if p.ops == "vaddr" and (p.pid is None) == (p.cgroup is None):
        raise ParamError("ops vaddr needs exactly one of --pid or --cgroup")
    if p.ops != "vaddr" and (p.pid is not None or p.cgroup is not None):
        raise ParamError(f"--pid and --cgroup need --ops vaddr (ops is {p.ops})")
    start, end = p.monitor_region_start, p.monitor_region_end
    if (start is None) != (end is None):
        raise ParamError("give both monitor_region_start and monitor_region_end, or neither")
    if start is not None and start >= end:
        raise ParamError(
            f"monitor_region_start ({start:#x}) must be below monitor_region_end ({end:#x})"
        )


def ops_class(name: str) -> type[Operations[Any]]:
    """The operations set registered as ``name`` (the core's registry)."""
    try:
        return operations_class(name)
    except OperationsUnavailable as err:
        raise ModuleError(str(err)) from None


def cgroup_pids(path: str) -> list[int]:
    """Pids of a cgroup v2 (a path under /sys/fs/cgroup, or relative to it)."""
    if not path.startswith("/sys/fs/cgroup"):
        path = os.path.join("/sys/fs/cgroup", path.lstrip("/"))
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            pids = [int(line) for line in f if line.strip()]
    except FileNotFoundError:
        raise ModuleError(f"cgroup {path} does not exist (give a cgroup v2 directory)") from None
    except PermissionError:
        raise ModuleError(f"cannot read {path}/cgroup.procs: run as root") from None
    if not pids:
        raise ModuleError(f"cgroup {path} has no processes to monitor")
    return pids


def make_ops_targets(p: Params) -> tuple[Operations[Any], list[Target]]:
    """Build the operations set and targets from the :data:`TARGET_PARAMS` values."""
    if p.ops == "sim":
        return make_sim(p.workload, p.seed, p.sim_size)
    if p.ops == "vaddr":
        pids = [p.pid] if p.pid is not None else cgroup_pids(p.cgroup)
        for pid in pids:
            if not os.path.exists(f"/proc/{pid}"):
                raise ModuleError(f"process {pid} does not exist")
        if p.monitor_region_start is not None:
            # A fixed virtual address range of each process: the fvaddr operations set.
            # Split it in min_nr_regions pieces, as vaddr splits its initial regions: one
            # region for the whole range would make the first aggregations all-or-nothing.
            fixed = even_pieces(
                p.monitor_region_start, p.monitor_region_end, getattr(p, "min_nr_regions", 10)
            )
            return ops_class("fvaddr")(), [Target(pid=pid, ranges=list(fixed)) for pid in pids]
        return ops_class("vaddr")(), [Target(pid=pid) for pid in pids]
    ranges = None
    if p.monitor_region_start is not None:
        ranges = [(p.monitor_region_start, p.monitor_region_end)]
    return ops_class("paddr")(), [Target(ranges=ranges)]


def even_pieces(start: int, end: int, nr_pieces: int) -> list[tuple[int, int]]:
    """``[start, end)`` in up to ``nr_pieces`` page-aligned, adjacent pieces."""
    page = 4096
    start, end = start // page * page, (end + page - 1) // page * page
    nr_pages = (end - start) // page
    nr_pieces = max(min(nr_pieces, nr_pages), 1)
    bounds = [start + (nr_pages * i // nr_pieces) * page for i in range(nr_pieces)] + [end]
    return list(zip(bounds, bounds[1:]))


def make_sim(
    workload: str, seed: int | None, total_bytes: int | None = None
) -> tuple[Operations[Any], list[Target]]:
    """The simulated operations set running a named workload (or a workload spec file)."""
    from pydamon.ops.sim import SimOperations, WorkloadError, load_workload

    try:
        spec: Any = load_workload(workload) if os.path.isfile(workload) else workload
        ops = SimOperations(spec, seed=seed, total_bytes=total_bytes)
    except WorkloadError as err:
        raise ParamError(f"parameter workload: {err}") from None
    return ops, [Target()]
