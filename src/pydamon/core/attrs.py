"""Monitoring attributes (the kernel's ``struct damon_attrs``) and their validation."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

#: Basis points in one: nr_accesses_bp and ratios are kept in units of 1/10000.
BP = 10000
_UINT_MAX = 2**32 - 1


class AttrsError(ValueError):
    """Monitoring attributes that the kernel's ``damon_set_attrs()`` would reject."""


@dataclass(frozen=True)
class IntervalsGoal:
    """Goal of the monitoring intervals auto-tuning (kernel v6.15+ ``damon_intervals_goal``).

    The sampling interval is scaled so that the observed access events within ``aggrs``
    aggregations are ``access_bp`` (per 10,000) of the theoretical maximum. ``aggrs == 0`` turns
    auto-tuning off.
    """

    access_bp: int = 0
    aggrs: int = 0
    min_sample_us: int = 0
    max_sample_us: int = 0

    @property
    def enabled(self) -> bool:
        return self.aggrs > 0


#: The intervals goal DAMON_STAT and the kernel's samples use ("Pareto twice").
RECOMMENDED_INTERVALS_GOAL = IntervalsGoal(
    access_bp=400, aggrs=3, min_sample_us=5_000, max_sample_us=10_000_000
)


@dataclass(frozen=True)
class Attrs:
    """Monitoring attributes, all intervals in microseconds.

    Defaults are ``damon_new_ctx()``'s: 5 ms sampling, 100 ms aggregation, 60 s ops update,
    10..1000 regions.
    """

    sample_interval_us: int = 5_000
    aggr_interval_us: int = 100_000
    ops_update_interval_us: int = 60_000_000
    min_nr_regions: int = 10
    max_nr_regions: int = 1000
    intervals_goal: IntervalsGoal = field(default_factory=IntervalsGoal)
    #: Number of samples per aggregation the auto-tuning keeps constant. 0 means "derive it from
    #: the intervals", as calls from outside the core do in the kernel.
    aggr_samples: int = 0

    def validate(self) -> None:
        """Raise :class:`AttrsError` for values ``damon_set_attrs()`` rejects."""
        for name in ("sample_interval_us", "aggr_interval_us", "ops_update_interval_us"):
            if getattr(self, name) < 0:
                raise AttrsError(f"{name} must not be negative (got {getattr(self, name)})")
        if self.min_nr_regions < 3:
            raise AttrsError(f"min_nr_regions must be at least 3 (got {self.min_nr_regions})")
        if self.min_nr_regions > self.max_nr_regions:
            raise AttrsError(
                f"min_nr_regions ({self.min_nr_regions}) must not exceed "
                f"max_nr_regions ({self.max_nr_regions})"
            )
        if self.sample_interval_us > self.aggr_interval_us:
            raise AttrsError(
                f"sample interval ({self.sample_interval_us} us) must not exceed "
                f"aggregation interval ({self.aggr_interval_us} us)"
            )
        goal = self.intervals_goal
        if goal.aggrs:
            if goal.aggrs < 0 or goal.access_bp < 0:
                raise AttrsError("intervals goal aggrs and access_bp must not be negative")
            if goal.min_sample_us > goal.max_sample_us:
                raise AttrsError(
                    f"intervals goal min_sample_us ({goal.min_sample_us}) must not exceed "
                    f"max_sample_us ({goal.max_sample_us})"
                )
            if not goal.min_sample_us <= self.sample_interval_us <= goal.max_sample_us:
                raise AttrsError(
                    f"sample interval ({self.sample_interval_us} us) must be inside the "
                    f"intervals goal range [{goal.min_sample_us}, {goal.max_sample_us}] us"
                )

    @property
    def max_nr_accesses(self) -> int:
        """``damon_max_nr_accesses()``: samples per aggregation, the highest nr_accesses."""
        if not self.sample_interval_us:
            return self.aggr_interval_us if self.aggr_interval_us else 1
        # The kernel caps it to UINT_MAX (the intervals are unsigned long, nr_accesses is not).
        return max(min(self.aggr_interval_us // self.sample_interval_us, _UINT_MAX), 1)

    def with_aggr_samples(self) -> Attrs:
        """Return these attrs with ``aggr_samples`` derived when unset (as damon_set_attrs())."""
        if self.aggr_samples:
            return self
        sample = self.sample_interval_us or 1
        return replace(self, aggr_samples=self.aggr_interval_us // sample)


def mult_frac(x: int, numer: int, denom: int) -> int:
    """The kernel's ``mult_frac()``: x * numer / denom without intermediate overflow."""
    return (x // denom) * numer + ((x % denom) * numer) // denom


def nr_accesses_to_accesses_bp(nr_accesses: int, attrs: Attrs) -> int:
    return mult_frac(nr_accesses, BP, attrs.max_nr_accesses)


def accesses_bp_to_nr_accesses(accesses_bp: int, attrs: Attrs) -> int:
    return accesses_bp * attrs.max_nr_accesses // BP


def nr_accesses_for_new_attrs(nr_accesses: int, old: Attrs, new: Attrs) -> int:
    """Rescale an nr_accesses observed under ``old`` attrs to ``new`` attrs (via access ratio)."""
    return accesses_bp_to_nr_accesses(nr_accesses_to_accesses_bp(nr_accesses, old), new)


def age_for_new_attrs(age: int, old: Attrs, new: Attrs) -> int:
    """Rescale an age (in aggregation intervals) to a new aggregation interval."""
    return age * old.aggr_interval_us // new.aggr_interval_us
