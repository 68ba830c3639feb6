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
from collections.abc import Sequence
from typing import Any

import pydamon.ops  # noqa: F401 - registers the user-space operations sets
from pydamon.core.attrs import Attrs
from pydamon.core.context import Context, Target
from pydamon.core.errors import FeatureMissing
from pydamon.core.operations import select_operations
from pydamon.kernel.capabilities import missing_features, probe
from pydamon.kernel.config import KERNEL_OPERATIONS, ContextConfig
from pydamon.kernel.context import KernelContext
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
    missing = missing_features(caps, [config])
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
) -> tuple[Context | KernelContext, str, str]:
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
        kctx = KernelContext(
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
