"""Kdamonds in sysfs (the kernel's ``mm/damon/sysfs.c``): create pydamon's own kdamonds, write
their contexts (operations set, attrs, targets, schemes), turn them on and off, commit changes
online and read back state, pid, stats, tried regions, tuned intervals and effective quotas.

Safety: pydamon never changes a kdamond it did not create. Writing ``nr_kdamonds`` makes the
kernel remove every kdamond directory and create new ones, so :meth:`DamonSysfs.add_kdamonds`
does so only while there are none or all are pydamon's own (``owned``); every write and every
``state`` command checks that its kdamond is owned. Reading any kdamond is fine.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydamon.core.context import Target
from pydamon.damos.scheme import Stats, TriedRegion
from pydamon.kernel import sysfs_schemes
from pydamon.kernel.capabilities import KernelCapabilities, require
from pydamon.kernel.config import KERNEL_OPERATIONS, ContextConfig
from pydamon.kernel.sysfs_common import (
    DEFAULT_ROOT,
    KdamondNotOwned,
    KernelFeatureMissing,
    KernelSysfsError,
    Sysfs,
    SysfsIO,
    join,
)


class KernelConfigError(ValueError):
    """A configuration the kernel backend cannot express (one-line message)."""


@dataclass(frozen=True)
class KdamondStatus:
    index: int
    state: str  # "on" or "off"
    pid: int | None  # None while off
    owned: bool


@dataclass(frozen=True)
class TunedIntervals:
    """A context's intervals as the kernel's auto-tuning left them (``update_tuned_intervals``)."""

    sample_us: int
    aggr_us: int


class DamonSysfs:
    """The kdamonds of the DAMON sysfs tree at ``root``; ``owned``: indices of pydamon's own.

    ``io`` does the file access (tests pass one that emulates the kernel on a temporary tree).
    """

    def __init__(
        self, root: str = DEFAULT_ROOT, io: SysfsIO | None = None, owned: Iterable[int] = ()
    ) -> None:
        self.fs = Sysfs(root, io)
        self.owned = set(owned)

    # -- kdamonds -------------------------------------------------------------------------------
    def nr_kdamonds(self) -> int:
        if not self.fs.isdir("kdamonds"):
            raise KernelFeatureMissing([(f"the DAMON sysfs interface ({self.fs.root})", "5.18")])
        return self.fs.read_int("kdamonds/nr_kdamonds")

    def kdamonds(self) -> list[KdamondStatus]:
        """Every kdamond's state and pid (reads only)."""
        return [self.status(k) for k in range(self.nr_kdamonds())]

    def status(self, k: int) -> KdamondStatus:
        pid = self.fs.read_int(join("kdamonds", k, "pid"))
        return KdamondStatus(
            index=k, state=self.state(k), pid=pid if pid > 0 else None, owned=k in self.owned
        )

    def state(self, k: int) -> str:
        return self.fs.read(join("kdamonds", k, "state"))

    def pid(self, k: int) -> int | None:
        return self.status(k).pid

    def add_kdamonds(self, count: int = 1) -> list[int]:
        """Create ``count`` kdamonds and return their indices (now owned).

        The kernel recreates every kdamond directory on this write, so the owned ones that
        existed are back to the kernel's defaults: write their configuration again.
        """
        nr = self.nr_kdamonds()
        foreign = [k for k in range(nr) if k not in self.owned]
        if foreign:
            listed = ", ".join(str(k) for k in foreign)
            raise KdamondNotOwned(
                f"{self.fs.path('kdamonds')} has kdamond(s) {listed} that pydamon did not create; "
                "adding kdamonds would recreate them, so pydamon leaves the kernel's DAMON alone"
            )
        running = [k for k in range(nr) if self.state(k) == "on"]
        if running:
            raise KernelSysfsError(
                f"kdamond {running[0]} is running; stop it before adding kdamonds "
                "(the kernel recreates all kdamond directories)"
            )
        self.fs.write("kdamonds/nr_kdamonds", nr + count)
        new = list(range(nr, nr + count))
        self.owned.update(new)
        return new

    def _kdamond_dir(self, k: int) -> str:
        if k not in self.owned:
            raise KdamondNotOwned(
                f"kdamond {k} at {self.fs.path(join('kdamonds', k))} was not created by pydamon; "
                "pydamon does not change it"
            )
        d = join("kdamonds", k)
        if not self.fs.isdir(d):
            raise KernelSysfsError(f"kdamond {k} does not exist at {self.fs.path(d)}")
        return d

    # -- configuration --------------------------------------------------------------------------
    def write(
        self, k: int, contexts: Sequence[ContextConfig], caps: KernelCapabilities | None = None
    ) -> None:
        """Write ``contexts`` to owned kdamond ``k`` (after checking them against ``caps``)."""
        d = self._kdamond_dir(k)
        for ctx in contexts:
            _check_context(ctx)
        if caps is not None:
            require(caps, contexts)
        contexts_dir = join(d, "contexts")
        self.fs.write_nr(contexts_dir, "contexts", len(contexts))
        for i, ctx in enumerate(contexts):
            self._write_context(join(contexts_dir, i), ctx)

    def _write_context(self, d: str, ctx: ContextConfig) -> None:
        fs = self.fs
        fs.write(join(d, "operations"), ctx.ops)
        attrs = ctx.attrs
        intervals = join(d, "monitoring_attrs/intervals")
        fs.write(join(intervals, "sample_us"), attrs.sample_interval_us)
        fs.write(join(intervals, "aggr_us"), attrs.aggr_interval_us)
        fs.write(join(intervals, "update_us"), attrs.ops_update_interval_us)
        goal_dir = join(intervals, "intervals_goal")
        if fs.isdir(goal_dir):
            goal = attrs.intervals_goal
            fs.write(join(goal_dir, "access_bp"), goal.access_bp)
            fs.write(join(goal_dir, "aggrs"), goal.aggrs)
            fs.write(join(goal_dir, "min_sample_us"), goal.min_sample_us)
            fs.write(join(goal_dir, "max_sample_us"), goal.max_sample_us)
        fs.write(join(d, "monitoring_attrs/nr_regions/min"), attrs.min_nr_regions)
        fs.write(join(d, "monitoring_attrs/nr_regions/max"), attrs.max_nr_regions)
        targets_dir = join(d, "targets")
        fs.write_nr(targets_dir, "targets", len(ctx.targets))
        for i, target in enumerate(ctx.targets):
            self._write_target(join(targets_dir, i), target)
        sysfs_schemes.write_schemes(fs, d, ctx.schemes, attrs)

    def _write_target(self, d: str, target: Target) -> None:
        if target.pid is not None:
            self.fs.write(join(d, "pid_target"), target.pid)
        ranges = target.ranges or []
        regions_dir = join(d, "regions")
        # nr_regions 0 on a commit keeps the regions (and their results) the kernel has.
        self.fs.write_nr(regions_dir, "regions", len(ranges))
        for i, (start, end) in enumerate(ranges):
            self.fs.write_ulong(join(regions_dir, i, "start"), start)
            self.fs.write_ulong(join(regions_dir, i, "end"), end)

    # -- state commands -------------------------------------------------------------------------
    def _command(self, k: int, command: str, need_on: bool = True) -> str:
        d = self._kdamond_dir(k)
        if need_on and self.state(k) != "on":
            raise KernelSysfsError(f"kdamond {k} is off; '{command}' needs it running")
        self.fs.write(join(d, "state"), command)
        return d

    def start(self, k: int) -> None:
        self._command(k, "on", need_on=False)

    def stop(self, k: int) -> None:
        self._command(k, "off", need_on=False)

    def commit(
        self, k: int, contexts: Sequence[ContextConfig], caps: KernelCapabilities | None = None
    ) -> None:
        """Apply ``contexts`` to the running kdamond ``k`` online (``commit``, 5.19+)."""
        if caps is not None and not caps.has("avail_operations"):
            raise KernelFeatureMissing([("online commit of changed parameters", "5.19")])
        self._kdamond_dir(k)
        if self.state(k) != "on":
            raise KernelSysfsError(f"kdamond {k} is off; 'commit' needs it running")
        self.write(k, contexts, caps)
        self._command(k, "commit")

    def commit_quota_goals(self, k: int) -> None:
        """Let the kernel re-read the quota goals' values (``user_input`` feedback, 6.8+)."""
        self._command(k, "commit_schemes_quota_goals")

    # -- reading back ---------------------------------------------------------------------------
    def _contexts(self, d: str) -> list[str]:
        contexts_dir = join(d, "contexts")
        return [
            join(contexts_dir, i)
            for i in range(self.fs.read_int(join(contexts_dir, "nr_contexts")))
        ]

    def _need_file(self, k: int, kind: str, rel: str, what: str, since: str) -> None:
        """Refuse a read-back whose file this kernel lacks, naming the feature, before writing
        a command the kernel would only answer with EINVAL."""
        d = self._kdamond_dir(k)
        for c in self._contexts(d):
            places = [c] if kind == "context" else sysfs_schemes.scheme_dirs(self.fs, c)
            for place in places:
                if not self.fs.exists(join(place, rel)):
                    raise KernelFeatureMissing([(what, since)])
                return

    def update_stats(self, k: int) -> list[list[Stats]]:
        """Each context's schemes' stats, fresh from the kernel."""
        d = self._command(k, "update_schemes_stats")
        return [
            [sysfs_schemes.read_stats(self.fs, s) for s in sysfs_schemes.scheme_dirs(self.fs, c)]
            for c in self._contexts(d)
        ]

    def tried_regions(self, k: int) -> list[list[list[TriedRegion]]]:
        """Each context's schemes' tried regions of the next apply interval (6.2+)."""
        self._need_file(k, "scheme", "tried_regions", "DAMOS tried regions", "6.2")
        d = self._command(k, "update_schemes_tried_regions")
        result = []
        for c in self._contexts(d):
            nr_targets = self.fs.read_int(join(c, "targets/nr_targets"))
            result.append(
                [
                    sysfs_schemes.read_tried_regions(self.fs, s, nr_targets)
                    for s in sysfs_schemes.scheme_dirs(self.fs, c)
                ]
            )
        return result

    def clear_tried_regions(self, k: int) -> None:
        self._command(k, "clear_schemes_tried_regions")

    def tuned_intervals(self, k: int) -> list[TunedIntervals]:
        """Each context's sampling and aggregation intervals as auto-tuned (6.15+)."""
        goal = "monitoring_attrs/intervals/intervals_goal"
        what = "monitoring intervals auto-tuning (intervals_goal)"
        self._need_file(k, "context", goal, what, "6.15")
        d = self._command(k, "update_tuned_intervals")
        result = []
        for c in self._contexts(d):
            intervals = join(c, "monitoring_attrs/intervals")
            result.append(
                TunedIntervals(
                    sample_us=self.fs.read_int(join(intervals, "sample_us")),
                    aggr_us=self.fs.read_int(join(intervals, "aggr_us")),
                )
            )
        return result

    def effective_quotas(self, k: int) -> list[list[int]]:
        """Each context's schemes' effective size quota in bytes (6.9+)."""
        what = "DAMOS effective quotas (quotas/effective_bytes)"
        self._need_file(k, "scheme", "quotas/effective_bytes", what, "6.9")
        d = self._command(k, "update_schemes_effective_quotas")
        return [
            [
                sysfs_schemes.read_effective_bytes(self.fs, s)
                for s in sysfs_schemes.scheme_dirs(self.fs, c)
            ]
            for c in self._contexts(d)
        ]


def _check_context(ctx: ContextConfig) -> None:
    if ctx.ops not in KERNEL_OPERATIONS:
        raise KernelConfigError(
            f"the kernel's DAMON has no operations set {ctx.ops!r}; "
            f"use one of {', '.join(KERNEL_OPERATIONS)}"
        )
    ctx.attrs.validate()
    for i, target in enumerate(ctx.targets):
        if ctx.ops in ("vaddr", "fvaddr") and target.pid is None:
            raise KernelConfigError(f"target {i}: the {ctx.ops} operations set needs a pid")
        if ctx.ops == "paddr" and not target.ranges:
            raise KernelConfigError(
                f"target {i}: the kernel's paddr needs the physical address ranges to monitor"
            )
        for start, end in target.ranges or []:
            if not 0 <= start < end:
                raise KernelConfigError(f"target {i}: region [{start:#x}, {end:#x}) is empty")
