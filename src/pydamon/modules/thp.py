"""``thp``: access-aware transparent huge pages (the DAMON evaluation's ``ethp``).

THP ``always`` makes programs faster (fewer TLB misses) but wastes memory where a huge page is
only partly used; ``never`` wastes nothing and gains nothing. ``thp`` gives huge pages only to
memory that is hot: regions of at least ``min_size`` (2 MiB) accessed in at least
``hot_thres_access_freq`` per mille of the samples are collapsed into huge pages
(``collapse`` = ``process_madvise(MADV_COLLAPSE)``, Linux 6.1+, synchronous, needs no THP
``always``: works with THP ``madvise``); everything else is left to the system's THP mode, so
with ``madvise`` (or ``never``) cold memory stays in small pages. The DAMON evaluation's ethp
(Linux 5.10, 24 PARSEC/SPLASH-2X workloads) kept 51% of THP ``always``' speedup while removing
76% of its memory bloat; ``bench/modules.py`` measures ours beside THP ``always`` and ``never``.

Cold regions (no access for ``cold_min_age``): the eval's ethp sets ``nohugepage`` on them, which
user space cannot do to another process (``process_madvise`` accepts only cold, pageout,
willneed and collapse), so ``--cold-action`` is ``none`` by default (cold memory is simply never
collapsed) or ``pageout``, which also splits huge pages of cold memory by paging it out.
``--ops sim`` uses ``nohugepage`` itself (modelled).
"""

from __future__ import annotations

from typing import Any

from pydamon.core import Context
from pydamon.damos.scheme import AccessPattern, Action, Scheme
from pydamon.modules.base import Param, ParamError, Params
from pydamon.modules.common import (
    SchemesModule,
    check_common,
    make_quota,
    monitoring_params,
    quota_params,
)
from pydamon.modules.targets import target_params

UINT_MAX = 2**32 - 1
ULONG_MAX = 2**64 - 1
HPAGE_SIZE = 2 << 20


class ThpModule(SchemesModule):
    name = "thp"
    description = "access-aware THP (ethp): collapse hot 2 MiB areas, keep cold ones small"
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
        Param("min_size", int, HPAGE_SIZE, "smallest region to collapse", unit="bytes", min=1),
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

    @classmethod
    def check_params(cls, p: Params) -> None:
        if p.ops == "paddr":
            raise ParamError(
                "thp works on virtual memory: use --ops vaddr --pid N (or --cgroup) or --ops sim"
            )
        check_common(p)

    def make_schemes(self) -> list[Any]:
        p = self.p
        max_nr_accesses = max(p.aggr_interval // max(p.sample_interval, 1), 1)
        schemes = [
            Scheme(
                pattern=AccessPattern(
                    min_sz_bytes=p.min_size,
                    min_nr_accesses=max(p.hot_thres_access_freq * max_nr_accesses // 1000, 1),
                    max_nr_accesses=UINT_MAX,
                ),
                action=Action.COLLAPSE,
                quota=make_quota(p, weight_nr_accesses_permil=1),
            )
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

    def scheme_stats(self, ctx: Context) -> dict[str, Any]:
        hot = ctx.schemes[0]
        out: dict[str, Any] = {
            "nr_collapse_tried_regions": hot.stats.nr_tried,
            "bytes_collapse_tried_regions": hot.stats.sz_tried,
            "nr_collapsed_regions": hot.stats.nr_applied,
            "bytes_collapsed_regions": hot.stats.sz_applied,
        }
        if len(ctx.schemes) > 1:
            cold = ctx.schemes[1]
            out["nr_cold_applied_regions"] = cold.stats.nr_applied
            out["bytes_cold_applied_regions"] = cold.stats.sz_applied
        # The hot bytes of the last aggregation: what huge pages should cover.
        hot_min = hot.pattern.min_nr_accesses
        hot_bytes = 0
        for t in ctx.targets:
            r = t.regions
            sel = (r.nr_accesses >= hot_min) & (r.sizes >= self.p.min_size)
            hot_bytes += int(r.sizes[sel].sum())
        out["hot_bytes"] = hot_bytes
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
