"""Monitoring intervals auto-tuning (``kdamond_tune_intervals()``, v6.15+), as pure functions.

Over the regions of one aggregation, so that a context's loop and a backend running on a kernel
without the feature (which reads the regions from snapshots) tune alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from pydamon.core.attrs import BP, Attrs
from pydamon.core.feedback import feed_loop_next_input

#: One aggregation's regions of a target: (sizes in bytes, nr_accesses), as arrays.
RegionsAccesses = tuple[np.ndarray, np.ndarray]


def intervals_score_bp(attrs: Attrs, regions: Iterable[RegionsAccesses]) -> int:
    """``damon_get_intervals_score()``: observed access events per goal, in bp."""
    max_events = 0
    events = 0
    for sizes, nr_accesses in regions:
        max_events += int(sizes.sum()) * attrs.aggr_samples
        events += int((sizes * nr_accesses).sum())
    target_events = max_events * attrs.intervals_goal.access_bp // BP
    return events * BP // (target_events or 1)


def intervals_adaptation_bp(score_bp: int) -> int:
    """How much to scale the intervals (bp) for an intervals score ``score_bp``."""
    adaptation_bp = feed_loop_next_input(100_000_000, score_bp) // BP
    # The loop's output ranges 1..20000; shrink no faster than to half per step.
    if adaptation_bp <= BP:
        adaptation_bp = 5000 + adaptation_bp // 2
    return adaptation_bp


def tuned_attrs(attrs: Attrs, regions: Iterable[RegionsAccesses]) -> Attrs | None:
    """The attrs after one tuning step toward the intervals goal; None when unchanged."""
    adaptation_bp = intervals_adaptation_bp(intervals_score_bp(attrs, regions))
    if adaptation_bp == BP:
        return None
    goal = attrs.intervals_goal
    sample = attrs.sample_interval_us * adaptation_bp // BP
    sample = max(goal.min_sample_us, min(goal.max_sample_us, sample))
    return replace(attrs, sample_interval_us=sample, aggr_interval_us=sample * attrs.aggr_samples)
