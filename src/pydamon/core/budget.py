"""A CPU budget for the monitoring engine: the whole process's CPU kept within a share of one CPU.

The kernel has no such thing (kdamond's cost is a few per cent); the user-space engine pays
system calls per region-sample and can take half a CPU on a busy process. The budget steers the
way intervals auto-tuning (:mod:`pydamon.core.tuning`) steers toward its access goal: at the end
of an aggregation, once at least :data:`MIN_PERIOD_S` of wall time passed since the last step,
the monitoring loop's CPU share over that time scales a slow-down factor ``F`` (the asked
cost over the allowed one). ``F`` stretches the sampling, aggregation and ops update intervals
together (the aggregation keeps its sample count, so nr_accesses keeps its range) up to
``max_stretch`` (10) times the asked ones, a hard limit; past that, ``max_nr_regions`` is lowered,
but no further than twice ``min_nr_regions`` (:func:`regions_floor`). Under budget, the regions
come back first, then the intervals, never beyond what was asked.

Why the floor: at ``max_nr_regions == min_nr_regions`` regions can never split (a split needs
room for twice the regions), so a hot area inside a big cold region is never isolated and both
read alike (the guest's hot/cold tests read ~0.2 for both with the 5% default). Why the loop's
thread (``time.thread_time()`` in the loop, not ``process_time()``): a program that embeds the
engine (a test, a server) does its own work in other threads, which the engine cannot lower; on
the CLI the loop is nearly all of the process's CPU anyway. The budget is then best effort: at
both limits the loop may use more than it allows, and says so in ``status``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pydamon.core.attrs import Attrs

if TYPE_CHECKING:
    from pydamon.core.context import Context

#: The default budget on real memory (per cent of one CPU); see docs/real-memory.md.
DEFAULT_REAL_CPU_BUDGET_PERCENT = 5.0

#: Wall time (s) a budget step measures over at least: shorter reads are CPU-time noise.
MIN_PERIOD_S = 1.0

#: Within this ratio of the budget nothing changes (each change rescales the results).
DEADBAND = 0.1

#: One step scales F by at most this (either way), against a noisy measurement's overshoot.
MAX_STEP = 8.0


class CpuBudgetError(ValueError):
    """A CPU budget out of range (one-line message)."""


@dataclass(frozen=True)
class CpuBudget:
    """The CPU the monitoring process may use: ``percent`` of one CPU (0: no budget)."""

    percent: float
    #: how many times the asked sampling interval may be stretched before regions are lowered
    max_stretch: float = 10.0

    def validate(self) -> None:
        if not math.isfinite(self.percent) or self.percent < 0:
            raise CpuBudgetError(f"CPU budget {self.percent!r}: must be a number of per cent >= 0")
        if not math.isfinite(self.max_stretch) or self.max_stretch < 1:
            raise CpuBudgetError(f"CPU budget max_stretch {self.max_stretch!r}: must be >= 1")

    @property
    def enabled(self) -> bool:
        return self.percent > 0


def as_budget(value: CpuBudget | float | None) -> CpuBudget | None:
    """A :class:`CpuBudget` from a budget, a number of per cent, or None (no budget)."""
    if value is None:
        return None
    budget = value if isinstance(value, CpuBudget) else CpuBudget(float(value))
    budget.validate()
    return budget if budget.enabled else None


def regions_floor(asked: Attrs) -> int:
    """How low the budget may take ``max_nr_regions``: twice ``min_nr_regions`` (room for the
    regions to split), never above what was asked."""
    return max(1, min(asked.max_nr_regions, 2 * asked.min_nr_regions))


class BudgetGovernor:
    """Keeps one context within its CPU budget by choosing its attrs (see the module doc)."""

    def __init__(self, budget: CpuBudget, asked: Attrs) -> None:
        self.budget = budget
        #: the attrs asked (by the user, or by intervals tuning), before any stretch
        self.asked = asked
        #: the slow-down factor: asked cost over allowed cost (1: as asked)
        self.factor = 1.0
        #: the process's CPU share (per cent of one CPU) of the last period, once measured
        self.usage_percent: float | None = None
        self._mark = (time.monotonic(), time.thread_time())

    @property
    def percent(self) -> float:
        return self.budget.percent

    def start(self) -> None:
        """Measure from now (the loop starts; called in the loop's thread, as :meth:`step`)."""
        self._mark = (time.monotonic(), time.thread_time())

    def chosen(self) -> Attrs:
        """The asked attrs under the current factor."""
        asked = self.asked
        stretch = min(self.factor, self.budget.max_stretch)
        goal = asked.intervals_goal
        if goal.enabled and asked.sample_interval_us:
            stretch = min(stretch, max(goal.max_sample_us / asked.sample_interval_us, 1.0))
        max_nr = asked.max_nr_regions
        if self.factor > stretch:
            max_nr = max(regions_floor(asked), int(asked.max_nr_regions * stretch / self.factor))
        if stretch == 1.0 and max_nr == asked.max_nr_regions:
            return asked
        # all three intervals stretched alike: the aggregation keeps its number of samples,
        # and the ops update (a maps read, an smaps read) keeps its share of the loop's work
        return replace(
            asked,
            sample_interval_us=int(asked.sample_interval_us * stretch),
            aggr_interval_us=int(asked.aggr_interval_us * stretch),
            ops_update_interval_us=int(asked.ops_update_interval_us * stretch),
            max_nr_regions=max_nr,
        )

    @property
    def max_factor(self) -> float:
        """The factor past which nothing changes (both limits reached): F stops there, so it
        cannot wind up while the loop stays over budget."""
        asked = self.asked
        return self.budget.max_stretch * asked.max_nr_regions / regions_floor(asked)

    def step(self) -> Attrs | None:
        """At an aggregation's end: the attrs to use from now, or None to keep them."""
        now, cpu = time.monotonic(), time.thread_time()
        wall = now - self._mark[0]
        if wall < MIN_PERIOD_S:
            return None
        usage = (cpu - self._mark[1]) / wall * 100
        self._mark = (now, cpu)
        self.usage_percent = usage
        ratio = usage / self.budget.percent
        if abs(ratio - 1) <= DEADBAND:
            return None
        ratio = min(max(ratio, 1 / MAX_STEP), MAX_STEP)
        factor = min(max(self.factor * ratio, 1.0), max(self.max_factor, 1.0))
        if factor == self.factor:
            return None
        self.factor = factor
        return self.chosen()

    def summary(self, current: Attrs) -> dict[str, Any]:
        """What the budget chose, for status files and record metadata."""
        asked = self.asked
        return {
            "cpu_budget_percent": self.budget.percent,
            "cpu_usage_percent": None
            if self.usage_percent is None
            else round(self.usage_percent, 2),
            "stretch": round(current.sample_interval_us / (asked.sample_interval_us or 1), 3),
            "asked_sample_interval_us": asked.sample_interval_us,
            "asked_aggr_interval_us": asked.aggr_interval_us,
            "asked_max_nr_regions": asked.max_nr_regions,
            "sample_interval_us": current.sample_interval_us,
            "aggr_interval_us": current.aggr_interval_us,
            "max_nr_regions": current.max_nr_regions,
        }


def achieved(ctx: Context) -> dict[str, Any]:
    """What a context's loop achieved (samples, the last aggregation's real length and mean
    access window, CPU per sample and per region-sample) beside what was asked, and what its
    CPU budget chose (None without one): for status files, summaries and record metadata."""
    attrs = ctx.attrs
    asked = attrs if ctx.budget is None else ctx.budget.asked
    out = ctx.pacer.stats(attrs.sample_interval_us)
    out.update(
        aggr_interval_us=attrs.aggr_interval_us,
        asked_sample_interval_us=asked.sample_interval_us,
        asked_aggr_interval_us=asked.aggr_interval_us,
        cpu_budget=None if ctx.budget is None else ctx.budget.summary(attrs),
    )
    return out
