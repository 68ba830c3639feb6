"""Region priority scores under a quota (``mm/damon/ops-common.c``).

Policy-free arithmetic over a region's access frequency and age; operations sets use
:func:`scheme_score` as their default ``get_scheme_score``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydamon.damos.scheme import DAMOS_MAX_SCORE, Action

if TYPE_CHECKING:
    from pydamon.core.attrs import Attrs
    from pydamon.core.context import Context, Target
    from pydamon.damos.scheme import Scheme

_MAX_SUBSCORE = 100
_MAX_AGE_IN_LOG = 32

#: Actions that prefer cold regions (the ops sets' ``get_scheme_score`` use the cold score).
COLD_ACTIONS = frozenset({Action.PAGEOUT, Action.LRU_DEPRIO, Action.MIGRATE_COLD})
#: Actions that prefer hot regions.
HOT_ACTIONS = frozenset({Action.LRU_PRIO, Action.MIGRATE_HOT})


def hot_score(
    nr_accesses: int, age: int, attrs: Attrs, weight_nr_accesses: int, weight_age: int
) -> int:
    """``damon_hot_score()``: 0 (coldest) .. 99 (hottest).

    The frequency subscore is nr_accesses per max_nr_accesses in percent; the age subscore is the
    log2 of the age in seconds, counted negative for unaccessed regions (older = colder), scaled to
    0..100. The two are averaged with the quota's weights.
    """
    max_nr_accesses = max(attrs.aggr_interval_us // (attrs.sample_interval_us or 1), 1)
    freq_subscore = nr_accesses * _MAX_SUBSCORE // max_nr_accesses
    age_in_sec = age * attrs.aggr_interval_us // 1_000_000
    age_in_log = 0
    while age_in_log < _MAX_AGE_IN_LOG and age_in_sec:
        age_in_log += 1
        age_in_sec >>= 1
    if freq_subscore == 0:
        age_in_log = -age_in_log
    age_subscore = (age_in_log + _MAX_AGE_IN_LOG) * _MAX_SUBSCORE // _MAX_AGE_IN_LOG // 2
    hotness = weight_nr_accesses * freq_subscore + weight_age * age_subscore
    if weight_nr_accesses + weight_age:
        hotness //= weight_nr_accesses + weight_age
    return hotness * DAMOS_MAX_SCORE // _MAX_SUBSCORE


def cold_score(
    nr_accesses: int, age: int, attrs: Attrs, weight_nr_accesses: int, weight_age: int
) -> int:
    """``damon_cold_score()``: 99 - hot score."""
    return DAMOS_MAX_SCORE - hot_score(nr_accesses, age, attrs, weight_nr_accesses, weight_age)


def scheme_score(ctx: Context, target: Target, region_index: int, scheme: Scheme) -> int:
    """The score of a region for ``scheme``, as the kernel's operations sets give it.

    Actions preferring cold memory (pageout, lru_deprio, migrate_cold) use the cold score,
    those preferring hot memory (lru_prio, migrate_hot) the hot score, and every other action
    scores all regions alike (the maximum).
    """
    if scheme.action not in COLD_ACTIONS and scheme.action not in HOT_ACTIONS:
        return DAMOS_MAX_SCORE
    regions = target.regions
    nr_accesses = int(regions.nr_accesses[region_index])
    age = int(regions.age[region_index])
    q = scheme.quota
    fn = cold_score if scheme.action in COLD_ACTIONS else hot_score
    return fn(nr_accesses, age, ctx.attrs, q.weight_nr_accesses_permil, q.weight_age_permil)
