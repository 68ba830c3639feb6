"""``reclaim``: DAMON_RECLAIM in user space — page out memory not accessed for ``min_age``.

One DAMOS scheme, as the kernel module builds it: regions of at least a page with no access for
at least ``min_age`` are paged out (``pageout``), applied every aggregation, under a time quota
(``quota_ms``) and a size quota (``quota_sz``) per ``quota_reset_interval_ms``, coldest (oldest)
first (quota weights: age only), and only while free memory is between the watermarks
(``wmarks_*``, per mille of total memory; high 500, mid 400, low 200: reclaim starts when free
memory falls to 40% and stops above 50% or below 20%, where the kernel's own reclaim takes over).

Auto-tuning: ``quota_mem_pressure_us`` adds a ``some_mem_psi_us`` goal (memory pressure stall
time per reset interval the quota is tuned for), ``quota_autotune_feedback`` a ``user_input``
goal with target 10,000 (write the current achievement of your own goal, in bp, with
``pydamon module set reclaim --quota-autotune-feedback N``). ``skip_anon`` adds an ``anon``
reject filter (only file-backed memory is reclaimed).

What is monitored: ``--ops paddr`` (physical memory, the kernel module's default: the biggest
System RAM range, or ``monitor_region_start``/``end``), ``--ops vaddr --pid N`` (a process),
``--ops vaddr --cgroup PATH`` (every process of a cgroup v2, one target each, fixed at start), or
``--ops sim``. vaddr pages out with ``process_madvise(MADV_PAGEOUT)`` on the process's ranges.
paddr does the same through a reverse map from page frame to (process, address), rebuilt at most
once per ops-update interval (:mod:`pydamon.ops._rmap`); like the kernel's paddr pageout it
re-checks each page's access (a temporary reject-``young`` filter) before paging it out. It can
only reach frames that exactly one process maps: page cache no process maps, and pages shared
between processes, stay (see docs/real-memory.md). pydamon's own memory is left alone.
"""

from __future__ import annotations

from typing import Any

from pydamon.core import PAGE_SIZE, Context
from pydamon.damos.scheme import (
    AccessPattern,
    Action,
    Filter,
    FilterType,
    GoalMetric,
    QuotaGoal,
    Scheme,
)
from pydamon.modules.base import Param
from pydamon.modules.common import (
    SchemesModule,
    make_quota,
    make_watermarks,
    monitoring_params,
    quota_params,
    wmarks_params,
)
from pydamon.modules.targets import TARGET_PARAMS

UINT_MAX = 2**32 - 1


class ReclaimModule(SchemesModule):
    name = "reclaim"
    description = "DAMON_RECLAIM: proactively page out memory not accessed for min_age"
    params = (
        *TARGET_PARAMS,
        Param("min_age", int, 120_000_000, "idle time after which memory is reclaimed", unit="us"),
        *quota_params(ms=10, sz=128 << 20),
        Param(
            "quota_mem_pressure_us",
            int,
            0,
            "memory PSI (some) stall time per reset interval to tune the quota for (0: off)",
            unit="us",
            min=0,
        ),
        Param(
            "quota_autotune_feedback",
            int,
            0,
            "user feedback for quota auto-tuning: achievement of your goal (10000 = met; 0: off)",
            unit="bp",
            min=0,
        ),
        *wmarks_params(high=500, mid=400, low=200),
        *monitoring_params(),
        Param("skip_anon", bool, False, "do not reclaim anonymous pages"),
    )

    def make_schemes(self) -> list[Scheme]:
        p = self.p
        goals = []
        if p.quota_mem_pressure_us:
            goals.append(
                QuotaGoal(metric=GoalMetric.SOME_MEM_PSI_US, target_value=p.quota_mem_pressure_us)
            )
        if p.quota_autotune_feedback:
            goals.append(
                QuotaGoal(
                    metric=GoalMetric.USER_INPUT,
                    target_value=10_000,
                    current_value=p.quota_autotune_feedback,
                )
            )
        quota = make_quota(p, weight_age_permil=1)
        quota.goals = goals
        filters = [Filter(type=FilterType.ANON, matching=True, allow=False)] if p.skip_anon else []
        min_age = p.min_age // max(p.aggr_interval, 1)
        return [
            Scheme(
                pattern=AccessPattern(
                    min_sz_bytes=PAGE_SIZE,
                    min_nr_accesses=0,
                    max_nr_accesses=0,
                    min_age=min_age,
                    max_age=UINT_MAX,
                ),
                action=Action.PAGEOUT,
                apply_interval_us=0,
                quota=quota,
                wmarks=make_watermarks(p),
                filters=filters,
            )
        ]

    def scheme_stats(self, ctx: Context) -> dict[str, Any]:
        s = ctx.schemes[0]
        st = s.stats
        return {
            "nr_reclaim_tried_regions": st.nr_tried,
            "bytes_reclaim_tried_regions": st.sz_tried,
            "nr_reclaimed_regions": st.nr_applied,
            "bytes_reclaimed_regions": st.sz_applied,
            "nr_quota_exceeds": st.qt_exceeds,
            "effective_quota_bytes": s.quota_state.esz,
        }
