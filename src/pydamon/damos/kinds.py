"""The names DAMOS uses: actions, units, quota goal metrics, watermark metrics, filter types.

Named and ordered as the kernel's enums (``include/linux/damon.h``).
"""

from __future__ import annotations

import enum


class Action(enum.StrEnum):
    """DAMOS actions, named (and ordered) as the kernel's ``enum damos_action``."""

    WILLNEED = "willneed"
    COLD = "cold"
    PAGEOUT = "pageout"
    HUGEPAGE = "hugepage"
    NOHUGEPAGE = "nohugepage"
    LRU_PRIO = "lru_prio"
    LRU_DEPRIO = "lru_deprio"
    MIGRATE_HOT = "migrate_hot"
    MIGRATE_COLD = "migrate_cold"
    STAT = "stat"
    COLLAPSE = "collapse"


ACTIONS = tuple(a.value for a in Action)


class NrAccessesUnit(enum.StrEnum):
    SAMPLES = "samples"  # the kernel's unit: sampling intervals with an access per aggregation
    PERCENT = "percent"  # damo's unit: percent of the samples of an aggregation interval


class AgeUnit(enum.StrEnum):
    AGGR_INTERVALS = "aggr_intervals"  # the kernel's unit
    USEC = "usec"  # damo's unit


class GoalMetric(enum.StrEnum):
    """Quota goal metrics (``enum damos_quota_goal_metric``)."""

    USER_INPUT = "user_input"
    SOME_MEM_PSI_US = "some_mem_psi_us"
    NODE_MEM_USED_BP = "node_mem_used_bp"
    NODE_MEM_FREE_BP = "node_mem_free_bp"
    NODE_MEMCG_USED_BP = "node_memcg_used_bp"
    NODE_MEMCG_FREE_BP = "node_memcg_free_bp"
    ACTIVE_MEM_BP = "active_mem_bp"
    INACTIVE_MEM_BP = "inactive_mem_bp"


class GoalTuner(enum.StrEnum):
    """How quota goals tune the effective quota (``damos_quota_goal_tuner``, v7.1)."""

    CONSIST = "consist"  # proportional feedback loop (the default)
    TEMPORAL = "temporal"  # full quota until the goal is met, then none


class WmarkMetric(enum.StrEnum):
    NONE = "none"
    FREE_MEM_RATE = "free_mem_rate"  # free memory per mille of total


class FilterType(enum.StrEnum):
    ANON = "anon"
    ACTIVE = "active"
    MEMCG = "memcg"
    YOUNG = "young"
    HUGEPAGE_SIZE = "hugepage_size"
    UNMAPPED = "unmapped"
    ADDR = "addr"
    TARGET = "target"


#: Filters the core handles (on regions); all others are evaluated per page by the ops set.
CORE_FILTER_TYPES = frozenset({FilterType.ADDR, FilterType.TARGET})


def parse_wmark_metric(text: object) -> WmarkMetric:
    """A watermark metric by name or by the kernel's number (0: none, 1: free_mem_rate)."""
    word = str(text).strip().lower()
    if word in ("0", "none"):
        return WmarkMetric.NONE
    if word in ("1", "free_mem_rate"):
        return WmarkMetric.FREE_MEM_RATE
    raise ValueError("unknown watermark metric; use none or free_mem_rate")


def parse_action(text: object) -> Action:
    """An action by name (case-insensitive)."""
    try:
        return Action(str(text).strip().lower())
    except ValueError:
        raise ValueError(f"unknown action; use one of {', '.join(ACTIONS)}") from None
