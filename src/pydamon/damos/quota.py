"""Quota arithmetic: effective size quota, goal tuning, prioritization (``mm/damon/core.c``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydamon.core.feedback import feed_loop_next_input
from pydamon.core.regions import PAGE_SIZE
from pydamon.damos.metrics import MetricsSource
from pydamon.damos.scheme import (
    DAMOS_MAX_SCORE,
    ULONG_MAX,
    GoalMetric,
    GoalTuner,
    Quota,
    QuotaGoal,
    QuotaState,
)

BP = 10000


def quota_is_set(quota: Quota, state: QuotaState) -> bool:
    """``damos_quota_is_set()``."""
    return bool(state.esz or quota.sz or quota.ms or quota.goals)


def quota_is_full(quota: Quota, state: QuotaState, min_region_sz: int) -> bool:
    """``damos_quota_is_full()``: charged up to the effective quota, or less than one
    minimum region left (actions apply per region)."""
    if not quota_is_set(quota, state):
        return False
    if state.charged_sz >= state.esz:
        return True
    return state.esz - state.charged_sz < min_region_sz


def measure_goal(goal: QuotaGoal, metrics: MetricsSource) -> None:
    """``damos_set_quota_goal_current_value()``: update ``goal.current_value``."""
    m = goal.metric
    if m == GoalMetric.USER_INPUT:
        return  # set by the user
    if m == GoalMetric.SOME_MEM_PSI_US:
        now = metrics.some_mem_psi_total_us() or 0
        if goal.last_psi_total_us is None:
            # not measured before: make no effect this round
            goal.current_value = goal.target_value
        else:
            goal.current_value = max(now - goal.last_psi_total_us, 0)
        goal.last_psi_total_us = now
    elif m in (GoalMetric.NODE_MEM_USED_BP, GoalMetric.NODE_MEM_FREE_BP):
        goal.current_value = metrics.node_mem_bp(goal.nid, m == GoalMetric.NODE_MEM_USED_BP)
    elif m in (GoalMetric.NODE_MEMCG_USED_BP, GoalMetric.NODE_MEMCG_FREE_BP):
        goal.current_value = metrics.node_memcg_bp(
            goal.nid, goal.path, m == GoalMetric.NODE_MEMCG_USED_BP
        )
    elif m in (GoalMetric.ACTIVE_MEM_BP, GoalMetric.INACTIVE_MEM_BP):
        goal.current_value = metrics.lru_mem_bp(m == GoalMetric.ACTIVE_MEM_BP)


def quota_score(goals: Sequence[QuotaGoal], metrics: MetricsSource) -> int:
    """``damos_quota_score()``: the highest ``current * 10000 / target`` over the goals (the
    least aggressive), after measuring each."""
    highest = 0
    for goal in goals:
        measure_goal(goal, metrics)
        highest = max(highest, goal.current_value * BP // max(goal.target_value, 1))
    return highest


def tune_esz_bp(quota: Quota, state: QuotaState, score: int) -> None:
    """Goal tuning of ``state.esz_bp`` from the goal score, by the quota's tuner."""
    if quota.goal_tuner == GoalTuner.TEMPORAL:
        if score >= BP:
            state.esz_bp = 0
        elif quota.sz:
            state.esz_bp = quota.sz * BP
        else:
            state.esz_bp = ULONG_MAX
    else:
        state.esz_bp = feed_loop_next_input(max(state.esz_bp, BP), score)


def set_effective_quota(
    quota: Quota,
    state: QuotaState,
    goal_score: Callable[[], int],
    min_region_sz: int = PAGE_SIZE,
) -> None:
    """``damos_set_effective_quota()``: the size quota of the next charge window.

    Goals give ``esz_bp / 10000`` through the tuner; a time quota converts to bytes at the
    throughput observed so far (``PAGE_SIZE * 1024`` bytes/ms before anything was charged); the
    size quota caps it.
    """
    if not quota.ms and not quota.goals:
        state.esz = quota.sz
        return
    esz = ULONG_MAX
    if quota.goals:
        tune_esz_bp(quota, state, goal_score())
        esz = state.esz_bp // BP
    if quota.ms:
        if state.total_charged_ns:
            throughput = state.total_charged_sz * 1_000_000 // state.total_charged_ns
        else:
            throughput = PAGE_SIZE * 1024
        esz = min(max(throughput * quota.ms, min_region_sz), esz)
    if quota.sz and quota.sz < esz:
        esz = quota.sz
    state.esz = esz


def min_score_for(histogram: Sequence[int], max_score: int, esz: int) -> int:
    """The score from which the regions, highest score first, add up to the effective quota
    (the kernel's min_score search over the size-per-score histogram)."""
    cumulated = 0
    score = max_score
    while True:
        cumulated += histogram[score]
        if cumulated >= esz or not score:
            break
        score -= 1
    return score


def new_histogram() -> list[int]:
    return [0] * (DAMOS_MAX_SCORE + 1)
