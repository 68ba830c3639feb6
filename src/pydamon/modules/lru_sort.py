"""``lru_sort``: DAMON_LRU_SORT's policy — keep hot memory, deprioritize cold memory.

Two DAMOS schemes, as the kernel module builds them: regions accessed in at least
``hot_thres_access_freq`` per mille of an aggregation's samples are prioritized (most accessed
first), regions not accessed for ``cold_min_age`` are deprioritized (oldest first). Each gets
half of ``quota_ms`` per ``quota_reset_interval_ms``; both run only while free memory is between
the watermarks (high 200, mid 150, low 50 per mille).

The kernel does this on physical pages with ``lru_prio`` (``folio_mark_accessed``) and
``lru_deprio`` (``folio_deactivate``). User space has no way to move a page to the active LRU list,
nor to touch the LRU of physical pages, so with real memory (``--ops vaddr``) the closest honest
actions are used:

- cold: ``cold`` = ``process_madvise(MADV_COLD)``, which deactivates the pages — the same
  ``folio_deactivate`` the kernel's ``lru_deprio`` does, so cold memory is reclaimed first;
- hot: ``willneed`` = ``process_madvise(MADV_WILLNEED)`` (``--hot-action willneed``, the default):
  it does not activate resident pages, but brings back hot pages that were swapped or paged out,
  so hot memory is kept resident; ``--hot-action stat`` only counts the hot regions.

``--ops sim`` uses ``lru_prio``/``lru_deprio`` themselves (the simulation models both).
``--ops paddr`` is refused: user space cannot sort physical pages on the LRU lists.
"""

from __future__ import annotations

from typing import Any

from pydamon.core import PAGE_SIZE, Context
from pydamon.damos.scheme import AccessPattern, Action, Scheme
from pydamon.modules.base import Param, ParamError, Params
from pydamon.modules.common import (
    SchemesModule,
    check_common,
    make_quota,
    make_watermarks,
    monitoring_params,
    quota_params,
    wmarks_params,
)
from pydamon.modules.targets import target_params

UINT_MAX = 2**32 - 1


class LruSortModule(SchemesModule):
    name = "lru_sort"
    description = "DAMON_LRU_SORT: keep hot memory, deprioritize cold memory (vaddr: willneed/cold)"
    params = (
        *target_params("vaddr"),
        Param(
            "hot_thres_access_freq",
            int,
            500,
            "access frequency (per mille of samples) that makes a region hot",
            unit="permil",
            min=0,
            max=1000,
        ),
        Param("cold_min_age", int, 120_000_000, "idle time that makes a region cold", unit="us"),
        *quota_params(ms=10, sz=None),
        *wmarks_params(high=200, mid=150, low=50),
        *monitoring_params(),
        Param(
            "hot_action",
            str,
            "willneed",
            "action on hot regions with real memory: willneed or stat (count only)",
            choices=("willneed", "stat"),
        ),
    )

    @classmethod
    def check_params(cls, p: Params) -> None:
        if p.ops == "paddr":
            raise ParamError(
                "lru_sort cannot run on paddr: user space cannot sort physical pages on the LRU "
                "lists; use --ops vaddr --pid N (or --cgroup) or --ops sim"
            )
        check_common(p)

    def actions(self) -> tuple[Action, Action]:
        if self.p.ops == "sim":
            return Action.LRU_PRIO, Action.LRU_DEPRIO
        return Action(self.p.hot_action), Action.COLD

    def make_schemes(self) -> list[Scheme]:
        p = self.p
        max_nr_accesses = max(p.aggr_interval // max(p.sample_interval, 1), 1)
        hot_action, cold_action = self.actions()
        # The kernel gives each scheme half of the time quota.
        half_ms = p.quota_ms // 2
        hot = Scheme(
            pattern=AccessPattern(
                min_sz_bytes=PAGE_SIZE,
                min_nr_accesses=p.hot_thres_access_freq * max_nr_accesses // 1000,
                max_nr_accesses=UINT_MAX,
                min_age=0,
                max_age=UINT_MAX,
            ),
            action=hot_action,
            quota=make_quota(p, ms=half_ms, weight_nr_accesses_permil=1),
            wmarks=make_watermarks(p),
        )
        cold = Scheme(
            pattern=AccessPattern(
                min_sz_bytes=PAGE_SIZE,
                min_nr_accesses=0,
                max_nr_accesses=0,
                min_age=p.cold_min_age // max(p.aggr_interval, 1),
                max_age=UINT_MAX,
            ),
            action=cold_action,
            quota=make_quota(p, ms=half_ms, weight_age_permil=1),
            wmarks=make_watermarks(p),
        )
        return [hot, cold]

    def scheme_stats(self, ctx: Context) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind, scheme in zip(("hot", "cold"), ctx.schemes):
            st = scheme.stats
            out[f"nr_lru_sort_tried_{kind}_regions"] = st.nr_tried
            out[f"bytes_lru_sort_tried_{kind}_regions"] = st.sz_tried
            out[f"nr_lru_sorted_{kind}_regions"] = st.nr_applied
            out[f"bytes_lru_sorted_{kind}_regions"] = st.sz_applied
            out[f"nr_{kind}_quota_exceeds"] = st.qt_exceeds
        return out
