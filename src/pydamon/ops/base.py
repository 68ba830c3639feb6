"""The operations-set interface (the kernel's ``struct damon_operations``).

The core calls these at fixed points of the monitoring loop:

- ``init`` once before the loop (set up targets' initial regions),
- ``update`` every ops-update interval (e.g. follow a process's mappings),
- ``prepare_access_checks`` before each sampling wait (pick sampling addresses, clear their
  accessed state), ``check_accesses`` after it (count accesses; return the highest nr_accesses),
- ``target_valid`` to know whether a target still exists,
- ``apply_scheme`` / ``get_scheme_score`` for DAMOS, ``cleanup`` when the loop ends.

An operations set knows nothing of scheme policy: it applies an action to an address range when
asked, and scores a region when asked.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pydamon.core.clock import Clock
    from pydamon.core.context import Context, Target


@dataclass
class ApplyResult:
    """What applying a scheme action to one region did."""

    #: Bytes the action was applied to (0 if it failed or was filtered out entirely).
    sz_applied: int = 0
    #: Bytes that passed the operations-layer filters.
    sz_ops_filter_passed: int = 0


class Operations(ABC):
    """Base class of operations sets. Subclasses set :attr:`name`."""

    name: str = "base"

    def default_clock(self) -> Clock | None:
        """The clock a context uses with this operations set when none is given."""
        return None

    def init(self, ctx: Context) -> None:  # noqa: B027 - optional hook
        """Set up targets before monitoring starts."""

    def update(self, ctx: Context) -> None:  # noqa: B027 - optional hook
        """Update targets' regions (every ops-update interval)."""

    @abstractmethod
    def prepare_access_checks(self, ctx: Context) -> None:
        """Pick a sampling address per region and clear its accessed state."""

    @abstractmethod
    def check_accesses(self, ctx: Context) -> int:
        """Count accesses of the sampling addresses; return the highest nr_accesses."""

    def target_valid(self, ctx: Context, target: Target) -> bool:
        return True

    def apply_scheme(
        self, ctx: Context, target: Target, start: int, end: int, scheme: Any
    ) -> ApplyResult:
        """Apply ``scheme``'s action to ``[start, end)`` of ``target``."""
        raise NotImplementedError(f"the {self.name} operations set cannot apply schemes")

    def get_scheme_score(self, ctx: Context, target: Target, region_index: int, scheme: Any) -> int:
        """Priority score (0..99) of a region for ``scheme`` under a quota.

        The default is the kernel's: the cold score for pageout/lru_deprio/migrate_cold, the hot
        score for lru_prio/migrate_hot, 99 otherwise (:func:`pydamon.damos.score.scheme_score`).
        """
        from pydamon.damos.score import scheme_score  # DAMOS math; ops sets may override

        return scheme_score(ctx, target, region_index, scheme)

    def cleanup(self, ctx: Context) -> None:  # noqa: B027 - optional hook
        """Release resources when the loop ends."""


def update_regions_access(ctx: Context, target: Target, accessed: np.ndarray) -> int:
    """Feed one sample's per-region accessed flags of ``target`` to the core.

    Returns the highest nr_accesses among the target's regions, for ``check_accesses``.
    """
    regions = target.regions
    regions.update_access_rate(accessed, ctx.attrs.max_nr_accesses)
    return int(regions.nr_accesses.max()) if len(regions) else 0
