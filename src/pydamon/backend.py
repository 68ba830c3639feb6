"""Which engine runs a monitoring configuration: the kernel's DAMON or pydamon's user-space one.

:func:`choose_backend` answers ``auto`` / ``kernel`` / ``user`` with the backend and a one-line
reason; :func:`make_context` builds the context (:class:`pydamon.core.Context` or
:class:`pydamon.kernel.KernelContext`, same API). ``auto`` picks the kernel only when its DAMON
has what the configuration needs and pydamon may create kdamonds there (``nr_kdamonds`` is 0 or
every kdamond is pydamon's own, :mod:`pydamon.kernel.pool`); else the user-space engine, saying
why. This module sits above core, ops and kernel (like the CLI, it only combines them).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import pydamon.ops  # noqa: F401 - registers the user-space operations sets
from pydamon.core.attrs import Attrs
from pydamon.core.clock import RealClock
from pydamon.core.context import Context, Target
from pydamon.core.errors import FeatureMissing
from pydamon.core.operations import select_operations
from pydamon.kernel.capabilities import missing_features, probe
from pydamon.kernel.config import KERNEL_OPERATIONS, ContextConfig
from pydamon.kernel.context import KernelContext
from pydamon.kernel.emulate import native_contexts, plan
from pydamon.kernel.pool import KdamondPool
from pydamon.kernel.sysfs import DamonSysfs
from pydamon.kernel.sysfs_common import (
    DEFAULT_ROOT,
    KdamondNotOwned,
    KernelFeatureMissing,
    KernelSysfsError,
    SysfsIO,
)
from pydamon.kernel.tracefs import TRACEFS_MOUNTS, TracefsIO, TracefsUnavailable, find_tracefs

BACKENDS = ("auto", "kernel", "user")


class BackendError(ValueError):
    """The asked backend cannot run this configuration (one line naming why)."""


class _KernelOps:
    """Stands in for an operations-set object where callers look at one: ``name``, and
    ``init``, run once the kdamond is on (as the user engine's ops ``init`` once the target is)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.init: Callable[[Any], None] = lambda ctx: None


class KernelEngineContext(KernelContext):
    """A :class:`KernelContext` with the rest of what commands and modules use of a core
    context: ``clock``, ``seed``, ``monitor_cpu_s``, ``aggregation_start_us``, ``set_schemes``,
    ``call``, ``commit_schemes`` and ``after_wmarks_check`` callbacks (accepted, never called:
    the kernel checks the watermarks itself)."""

    schemes_runner = None
    #: a CPU budget steers the user-space engine only: kdamond's cost is the kernel's own
    budget = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = RealClock()
        self.seed = None
        self.kernel_ops = _KernelOps(self.ops)
        self._started_us = self.clock.now_us()
        self.pacer = _KernelPacer(self)

    def set_cpu_budget(self, budget: Any) -> None:
        """Accepted for the user engine's API; no effect (the kernel's DAMON paces itself)."""

    @property
    def monitor_cpu_s(self) -> float:
        return self.reader_cpu_s

    @property
    def aggregation_start_us(self) -> int:
        return self._started_us

    def add_callback(self, kind: Any, fn: Any) -> None:
        if kind != "after_wmarks_check":
            super().add_callback(kind, fn)

    def set_schemes(self, schemes: Sequence[Any]) -> None:
        if self.is_running:
            raise RuntimeError("the kernel backend takes new schemes before it starts")
        self.schemes = list(schemes)
        self._stats_base = [type(s.stats)() for s in self.schemes]
        self._stats_last = [type(s.stats)() for s in self.schemes]

    def commit_schemes(self) -> None:
        """Commit the schemes' changed inputs (quotas, watermarks, patterns) online."""
        self.set_attrs(self.attrs)

    def call(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(self)`` now: the kernel context's changes are thread-safe commits."""
        with self._lock:
            return fn(self)

    def _setup(self) -> None:
        super()._setup()
        self._started_us = self.clock.now_us()
        self.kernel_ops.init(self)


class _KernelPacer:
    """What :func:`pydamon.core.budget.achieved` reads of a context's pacing: the kernel does
    not say how many samples an aggregation took, so those are unknown (None / -1); the CPU is
    pydamon's reader's (kdamond's is the kernel's, seen in ``ps``)."""

    def __init__(self, ctx: KernelContext) -> None:
        self._ctx = ctx

    def stats(self, sample_interval_us: int) -> dict[str, Any]:
        return {
            "nr_samples": None,
            "sample_interval_us": sample_interval_us,
            "last_aggregation_us": -1,
            "last_nr_samples": None,
            "last_mean_access_window_us": -1,
            "cpu_per_sample_us": None,
            "cpu_per_region_sample_us": None,
            "reader_cpu_s": round(self._ctx.reader_cpu_s, 3),
            # what this kernel lacks and pydamon runs on top of it (kernel/emulate.py)
            "emulated": self._ctx.emulation.describe(),
        }


def ops_of(ctx: Any) -> Any:
    """The object whose ``init`` runs when monitoring begins, on either engine."""
    return ctx.kernel_ops if isinstance(ctx, KernelEngineContext) else ctx.ops


def choose_backend(
    kind: str,
    ops: str,
    attrs: Attrs | None = None,
    targets: Sequence[Target] = (),
    schemes: Sequence[Any] = (),
    *,
    damon_root: str = DEFAULT_ROOT,
    io: SysfsIO | None = None,
    pool: KdamondPool | None = None,
    tracefs: Sequence[str] = TRACEFS_MOUNTS,
    tracefs_io: TracefsIO | None = None,
) -> tuple[str, str]:
    """(``"kernel"`` or ``"user"``, why) for ``kind`` (auto, kernel or user).

    ``kernel`` is taken as asked (errors come when the context starts, each one line) except
    for what can never run there (an operations set the kernel has no name for). ``auto``
    probes the tree; it may stage a probe configuration in a pydamon-owned kdamond.
    """
    if kind not in BACKENDS:
        raise BackendError(f"unknown backend {kind!r}; use one of {', '.join(BACKENDS)}")
    if kind == "user":
        return "user", "user-space engine, as asked (--backend user)"
    if ops not in KERNEL_OPERATIONS:
        why = f"the {ops} operations set exists only in pydamon's user-space engine"
        if kind == "kernel":
            raise BackendError(f"--backend kernel: {why}; use --backend user or auto")
        return "user", f"user-space engine: {why}"
    if kind == "kernel":
        return "kernel", f"kernel DAMON at {damon_root}, as asked (--backend kernel)"
    why = _kernel_unfit(
        ops, attrs or Attrs(), targets, schemes, damon_root, io, pool, tracefs, tracefs_io
    )
    if why:
        return "user", f"user-space engine: {why}"
    return "kernel", f"kernel DAMON at {damon_root}: it has what this configuration needs"


def _kernel_unfit(
    ops: str,
    attrs: Attrs,
    targets: Sequence[Target],
    schemes: Sequence[Any],
    root: str,
    io: SysfsIO | None,
    pool: KdamondPool | None,
    tracefs: Sequence[str],
    tracefs_io: TracefsIO | None,
) -> str:
    """Why the kernel at ``root`` cannot run this ("" if it can)."""
    sysfs = DamonSysfs(root, io)
    if not sysfs.fs.isdir("kdamonds"):
        return f"no DAMON sysfs interface at {root}"
    if io is None and not os.access(sysfs.fs.path("kdamonds/nr_kdamonds"), os.W_OK):
        return f"no write access to {root} (the kernel backend needs root)"
    pool = pool or KdamondPool()
    try:
        foreign = pool.foreign(sysfs)
        if foreign:
            listed = ", ".join(str(k) for k in foreign)
            return (
                f"kdamond(s) {listed} at {root} were not created by pydamon, which leaves "
                "them alone (adding kdamonds would recreate them)"
            )
        # probe on a kdamond of the pool's, held meanwhile, so no other pydamon uses it
        k = pool.acquire(sysfs)
        try:
            caps = probe(root, io, stage=True, owned={k})
        finally:
            pool.release(sysfs, k)
    except (KdamondNotOwned, KernelSysfsError, FeatureMissing) as err:
        return str(err)
    if not caps.inspected:
        return f"cannot tell what the kernel's DAMON supports ({caps.probed_by})"
    config = ContextConfig(ops=ops, attrs=attrs, targets=list(targets), schemes=list(schemes))
    # what pydamon can run on top of this kernel is not missing (kernel/emulate.py)
    emulation = plan(caps, attrs, schemes, len(targets))
    missing = missing_features(caps, native_contexts(emulation, [config], {}))
    if missing:
        return str(KernelFeatureMissing(missing))
    try:
        find_tracefs(tracefs, tracefs_io)
    except TracefsUnavailable:
        if not caps.has("tried_regions"):
            return "no damon_aggregated trace and no DAMOS tried regions (Linux 6.2+)"
    return ""


def make_context(
    kind: str,
    ops: str,
    targets: Sequence[Target],
    attrs: Attrs | None = None,
    schemes: Sequence[Any] = (),
    *,
    damon_root: str = DEFAULT_ROOT,
    io: SysfsIO | None = None,
    pool: KdamondPool | None = None,
    user_ops: Any = None,
    seed: int | None = None,
    clock: Any = None,
    **kernel_options: Any,
) -> tuple[Context | KernelEngineContext, str, str]:
    """(context, backend, reason). ``user_ops``: the operations-set object for the user-space
    engine (else one made from ``ops``); ``kernel_options`` go to :class:`KernelContext`
    (``results``, ``tracefs``, ``tracefs_io``, ``poll_s``)."""
    backend, reason = choose_backend(
        kind,
        ops,
        attrs,
        targets,
        schemes,
        damon_root=damon_root,
        io=io,
        pool=pool,
        tracefs=_mounts(kernel_options.get("tracefs")),
        tracefs_io=kernel_options.get("tracefs_io"),
    )
    if backend == "kernel":
        kctx = KernelEngineContext(
            ops,
            targets,
            attrs,
            schemes=schemes,
            root=damon_root,
            io=io,
            pool=pool or KdamondPool(),
            **kernel_options,
        )
        return kctx, backend, reason
    ctx = Context(user_ops or select_operations(ops), targets, attrs, seed=seed, clock=clock)
    if schemes:
        ctx.set_schemes(schemes)
    return ctx, backend, reason


def _mounts(tracefs: str | Sequence[str] | None) -> Sequence[str]:
    if tracefs is None:
        return TRACEFS_MOUNTS
    return (tracefs,) if isinstance(tracefs, str) else tuple(tracefs)
