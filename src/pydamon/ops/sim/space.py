"""One simulated address space: the access model, its ground truth and DAMOS's effects."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pydamon.ops.sim.access import IntArray
from pydamon.ops.sim.effects import ActionEffects
from pydamon.ops.sim.truth import GroundTruth


class SimSpace(GroundTruth, ActionEffects):
    """A workload's address space: access model, ground truth and DAMOS-affected state.

    Times given to the public methods are in the monitor's clock (µs); ``origin_us`` is the
    clock time of the workload's start. :class:`GroundTruth` and :class:`ActionEffects` both
    extend the :class:`~pydamon.ops.sim.access.AccessModel`; the access check is here because it
    reads both the model and the huge-page state the actions change.
    """

    def accessed_in_window(
        self, addrs: IntArray, start_us: int, end_us: int
    ) -> npt.NDArray[np.bool_]:
        """What an access check of ``addrs`` over ``[start_us, end_us)`` finds.

        A 4 KiB page counts as accessed if it is accessed in any tick overlapping the window. In
        a huge-page-backed range the Accessed bit is the 2 MiB page's (a PMD), so there the check
        finds an access if any of its 512 pages was accessed (drawn from that probability, with
        one draw per huge page and tick).
        """
        addrs = np.asarray(addrs, dtype=np.int64)
        j0, j1 = self.tick_span(start_us, end_us)
        hit = self._pages_accessed(addrs, j0, j1)
        if len(self.huge):
            hi = np.searchsorted(self.huge.starts, addrs, side="right") - 1
            in_huge = (hi >= 0) & (addrs < self.huge.ends[hi])
            if in_huge.any():
                hit[in_huge] = self._huge_pages_accessed(addrs[in_huge], j0, j1)
        return hit
