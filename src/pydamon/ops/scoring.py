"""The base of the operations sets that apply :mod:`pydamon.damos` schemes.

As the kernel's vaddr, paddr and their kin do in ``get_scheme_score`` (``mm/damon/ops-common.c``'s
``damon_cold_score()`` / ``damon_hot_score()``), they score regions by access frequency and age.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydamon.core.operations import Operations
from pydamon.damos.scheme import Scheme
from pydamon.damos.score import scheme_score

if TYPE_CHECKING:
    from pydamon.core.context import Context, Target


class DamosOperations(Operations[Scheme]):
    """An operations set handed :class:`~pydamon.damos.Scheme` objects, scoring as the kernel."""

    def get_scheme_score(
        self, ctx: Context, target: Target, region_index: int, scheme: Scheme
    ) -> int:
        return scheme_score(ctx, target, region_index, scheme)
