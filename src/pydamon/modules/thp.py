"""``thp``: access-aware transparent huge pages (the DAMON evaluation's ``ethp``).

THP ``always`` makes programs faster (fewer TLB misses) but wastes memory where a huge page is
only partly used; ``never`` wastes nothing and gains nothing. ``thp`` gives huge pages only to
memory that stays hot: a 2 MiB-aligned block is collapsed into a huge page
(``collapse`` = ``process_madvise(MADV_COLLAPSE)``, Linux 6.1+, synchronous, needs no THP
``always``: works with THP ``madvise``) once it was hot in at least ``hot_min_aggrs`` of the
last ``hot_window_aggrs`` aggregations. A block is hot in an aggregation when regions accessed
in at least ``hot_thres_access_freq`` per mille of the samples cover more than
``hot_min_coverage`` per mille of it. Only such blocks are collapsed, never the rest of a hot
region: DAMON's regions move every aggregation, and a region straddling warm and cold memory
reads hot now and then; collapsing it whole would back the cold part with huge pages (the bloat
THP ``always`` has). Region age cannot tell (noise in hot regions keeps resetting it), so the
module keeps its own per-block history (:class:`pydamon.modules.blocks.BlockHistory`) in an
after-aggregation callback and restricts the collapse scheme to those blocks with DAMOS ``addr``
filters (one collapse scheme per target, each with a ``target`` filter). Runs of persistently
hot blocks shorter than ``min_size`` are left alone. Everything else is left to the system's THP
mode, so with ``madvise`` (or ``never``) cold memory stays in small pages. Blocks already huge
are collapsed again each aggregation while they stay hot: the kernel returns at once for them.

The DAMON evaluation's ethp (Linux 5.10, 24 PARSEC/SPLASH-2X workloads) kept 51% of THP
``always``' speedup while removing 76% of its memory bloat; ``bench/modules.py`` measures ours
beside THP ``always`` and ``never``.

Cold regions (no access for ``cold_min_age``): the eval's ethp sets ``nohugepage`` on them, which
user space cannot do to another process (``process_madvise`` accepts only cold, pageout,
willneed and collapse), so ``--cold-action`` is ``none`` by default (cold memory is simply never
collapsed) or ``pageout``, which also splits huge pages of cold memory by paging it out.
``--ops sim`` uses ``nohugepage`` itself (modelled).
"""

from __future__ import annotations

from typing import Any

from pydamon.core import PAGE_SIZE, Context
from pydamon.damos.filters import set_filters_default_reject
from pydamon.damos.scheme import AccessPattern, Action, Filter, FilterType, Scheme
from pydamon.modules.base import Param, ParamError, Params
from pydamon.modules.blocks import MAX_WINDOW, BlockHistory
from pydamon.modules.common import (
    SchemesModule,
    check_common,
    make_quota,
    monitoring_params,
    quota_params,
)
from pydamon.modules.targets import target_params
from pydamon.ops.pagefacts import HPAGE_PMD_SIZE

UINT_MAX = 2**32 - 1


class ThpModule(SchemesModule):
    name = "thp"
    description = "access-aware THP (ethp): collapse persistently hot 2 MiB blocks, keep cold small"
    params = (
        *target_params("vaddr"),
        Param(
            "hot_thres_access_freq",
            int,
            50,
            "access frequency (per mille of samples) that makes a region hot",
            unit="permil",
            min=0,
            max=1000,
        ),
        Param(
            "hot_min_coverage",
            int,
            500,
            "share of a 2 MiB block hot regions must cover (more than this) for it to be hot",
            unit="permil",
            min=0,
            max=999,
        ),
        Param(
            "hot_min_aggrs",
            int,
            4,
            "aggregations (of the last hot_window_aggrs) a block must be hot in to be collapsed",
            min=1,
            max=MAX_WINDOW,
        ),
        Param(
            "hot_window_aggrs",
            int,
            5,
            "aggregations of per-block hotness history kept",
            min=1,
            max=MAX_WINDOW,
        ),
        Param(
            "min_size",
            int,
            HPAGE_PMD_SIZE,
            "smallest run of persistently hot blocks to collapse (and cold region to act on)",
            unit="bytes",
            min=1,
        ),
        Param("cold_min_age", int, 7_000_000, "idle time that makes a region cold", unit="us"),
        Param(
            "cold_action",
            str,
            "none",
            "action on cold regions with real memory: none or pageout",
            choices=("none", "pageout"),
        ),
        *quota_params(ms=0, sz=0),
        *monitoring_params(),
    )

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        p = self.p
        self.history = BlockHistory(
            HPAGE_PMD_SIZE, p.hot_window_aggrs, p.hot_min_aggrs, p.hot_min_coverage
        )
        #: Targets of the built context (one collapse scheme each); 1 until built.
        self._nr_targets = 1

    @classmethod
    def check_params(cls, p: Params) -> None:
        if p.ops == "paddr":
            raise ParamError(
                "thp works on virtual memory: use --ops vaddr --pid N (or --cgroup) or --ops sim"
            )
        if p.hot_min_aggrs > p.hot_window_aggrs:
            raise ParamError(
                f"hot_min_aggrs ({p.hot_min_aggrs}) must not exceed hot_window_aggrs "
                f"({p.hot_window_aggrs})"
            )
        check_common(p)

    def build(self) -> list[Context]:
        ops, targets = self.make_targets()
        self._nr_targets = len(targets)
        return [
            Context(ops, targets, self.make_attrs(), schemes=self.make_schemes(), seed=self.p.seed)
        ]

    def commit(self, ctx: Context, old: Params) -> None:
        p = self.p
        self.history.configure(p.hot_window_aggrs, p.hot_min_aggrs, p.hot_min_coverage)
        super().commit(ctx, old)

    # -- schemes -------------------------------------------------------------------------------
    def collapse_filters(self, target_index: int) -> list[Filter]:
        """Filters that let target ``target_index``'s collapse scheme act on its persistently
        hot blocks only (the blocks as of the last aggregation)."""
        # other targets' regions are not this scheme's
        filters = [Filter(FilterType.TARGET, matching=False, target_idx=target_index)]
        ranges = self.history.persistent_ranges(target_index, self.p.min_size)
        if not ranges:
            return [*filters, Filter(FilterType.TARGET, target_idx=target_index)]
        # allow filters last: memory no filter matches is rejected
        return filters + [
            Filter(FilterType.ADDR, allow=True, addr_start=start, addr_end=end)
            for start, end in ranges
        ]

    def make_schemes(self) -> list[Scheme]:
        p = self.p
        schemes = [
            Scheme(
                # any region: the filters pick the persistently hot blocks
                pattern=AccessPattern(
                    min_sz_bytes=PAGE_SIZE, min_nr_accesses=0, max_nr_accesses=UINT_MAX
                ),
                action=Action.COLLAPSE,
                quota=make_quota(p, weight_nr_accesses_permil=1),
                filters=self.collapse_filters(ti),
            )
            for ti in range(self._nr_targets)
        ]
        cold_action = "nohugepage" if p.ops == "sim" else p.cold_action
        if cold_action != "none":
            schemes.append(
                Scheme(
                    pattern=AccessPattern(
                        min_sz_bytes=p.min_size,
                        min_nr_accesses=0,
                        max_nr_accesses=0,
                        min_age=p.cold_min_age // max(p.aggr_interval, 1),
                        max_age=UINT_MAX,
                    ),
                    action=Action(cold_action),
                    quota=make_quota(p, weight_age_permil=1),
                )
            )
        return schemes

    def hot_min_nr_accesses(self, ctx: Context) -> int:
        attrs = ctx.attrs
        max_nr_accesses = max(attrs.aggr_interval_us // max(attrs.sample_interval_us, 1), 1)
        return max(self.p.hot_thres_access_freq * max_nr_accesses // 1000, 1)

    def after_aggregation(self, ctx: Context) -> None:
        # Runs before this aggregation's schemes apply: record which blocks are hot, then point
        # the collapse schemes at the blocks that stayed hot.
        hot_min = self.hot_min_nr_accesses(ctx)
        for ti, t in enumerate(ctx.targets):
            r = t.regions
            self.history.update(ti, r.start, r.end, r.nr_accesses >= hot_min)
        for ti, scheme in enumerate(ctx.schemes[: self._nr_targets]):
            scheme.filters = self.collapse_filters(ti)
            set_filters_default_reject(scheme)
        super().after_aggregation(ctx)

    # -- stats ---------------------------------------------------------------------------------
    def scheme_stats(self, ctx: Context) -> dict[str, Any]:
        collapse = ctx.schemes[: self._nr_targets]
        out: dict[str, Any] = {
            "nr_collapse_tried_regions": sum(s.stats.nr_tried for s in collapse),
            "bytes_collapse_tried_regions": sum(s.stats.sz_tried for s in collapse),
            "nr_collapsed_regions": sum(s.stats.nr_applied for s in collapse),
            "bytes_collapsed_regions": sum(s.stats.sz_applied for s in collapse),
        }
        if len(ctx.schemes) > self._nr_targets:
            cold = ctx.schemes[self._nr_targets]
            out["nr_cold_applied_regions"] = cold.stats.nr_applied
            out["bytes_cold_applied_regions"] = cold.stats.sz_applied
        # The hot bytes of the last aggregation (what huge pages could cover), and the blocks
        # hot long enough to be collapsed.
        hot_min = self.hot_min_nr_accesses(ctx)
        hot_bytes = 0
        for t in ctx.targets:
            r = t.regions
            hot_bytes += int(r.sizes[r.nr_accesses >= hot_min].sum())
        out["hot_bytes"] = hot_bytes
        out["persistent_hot_bytes"] = sum(
            len(self.history.persistent_blocks(ti)) * HPAGE_PMD_SIZE
            for ti in range(len(ctx.targets))
        )
        return out

    def extra_stats(self, ctx: Context) -> dict[str, Any]:
        if self.p.ops != "vaddr":
            return {}
        # AnonHugePages of the targets; smaps_rollup walks the page tables, so at most every 5 s.
        now = ctx.clock.now_us()
        if now >= getattr(self, "_next_smaps_us", 0):
            self._next_smaps_us = now + 5_000_000
            self._anon_huge = sum(_anon_huge_bytes(t.pid) for t in ctx.targets)
        return {"anon_huge_bytes": getattr(self, "_anon_huge", 0)}


def _anon_huge_bytes(pid: int | None) -> int:
    if pid is None:
        return 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0
