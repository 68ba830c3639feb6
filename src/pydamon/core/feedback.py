"""The kernel's feedback loop (``damon_feed_loop_next_input()``), shared by the monitoring
intervals auto-tuning and DAMOS quota goals."""

from __future__ import annotations

#: Score the loop drives toward (basis points of the goal).
FEED_LOOP_GOAL = 10000
#: Lowest input the loop returns, so that compensation never becomes zero.
FEED_LOOP_MIN_INPUT = 10000
_ULONG_MAX = 2**64 - 1


def feed_loop_next_input(last_input: int, score: int) -> int:
    """Next control input given the last one and a score (10000 = goal met exactly).

    ``next = max(last * ((goal - score) / goal + 1), min_input)``; a score of twice the goal or
    more returns the minimum input at once.
    """
    goal = FEED_LOOP_GOAL
    if score == goal:
        return last_input
    if score >= goal * 2:
        return FEED_LOOP_MIN_INPUT
    over_achieving = score > goal
    diff = score - goal if over_achieving else goal - score
    if last_input < _ULONG_MAX // diff:
        compensation = last_input * diff // goal
    else:
        compensation = last_input // goal * diff
    if over_achieving:
        return max(last_input - compensation, FEED_LOOP_MIN_INPUT)
    return min(last_input + compensation, _ULONG_MAX)
