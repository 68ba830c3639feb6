"""Exact ground truth of a simulated address space, and a snapshot's accuracy against it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pydamon.core.regions import PAGE_SIZE
from pydamon.core.snapshot import Snapshot
from pydamon.ops.sim.access import AccessModel, FloatArray, IntArray

#: Most ticks :meth:`GroundTruth.expected_rates` evaluates; longer windows are subsampled evenly.
MAX_RATE_TICKS = 256


@dataclass
class RateMap:
    """Piecewise-constant ground truth over an address range and a time window.

    ``rate`` is each piece's expected fraction of ticks with an access (the quantity DAMON's
    ``nr_accesses / max_nr_accesses`` estimates); ``p_any`` the probability that a page is
    accessed at least once in the window (its share of the working set).
    """

    starts: IntArray
    ends: IntArray
    rate: FloatArray
    p_any: FloatArray
    start_us: int
    end_us: int

    @property
    def sizes(self) -> IntArray:
        return self.ends - self.starts

    def rate_at(self, starts: IntArray, ends: IntArray) -> FloatArray:
        """Byte-weighted mean true rate of each ``[starts[i], ends[i])``."""
        return _range_means(self.starts, self.ends, self.rate, starts, ends)

    @property
    def wss_bytes(self) -> float:
        """Expected bytes accessed at least once in the window."""
        return float((self.sizes * self.p_any).sum())

    def hot_bytes(self, threshold: float) -> int:
        return int(self.sizes[self.rate >= threshold].sum())


def _range_means(
    seg_starts: IntArray, seg_ends: IntArray, values: FloatArray, starts: IntArray, ends: IntArray
) -> FloatArray:
    """Byte-weighted mean of a piecewise-constant function over each query range."""
    # prefix integral of value over address, evaluated at the query bounds
    bounds = np.concatenate([seg_starts, seg_ends[-1:]]) if len(seg_starts) else seg_starts
    integral = np.concatenate([[0.0], np.cumsum((seg_ends - seg_starts) * values)])

    def integ(x: IntArray) -> FloatArray:
        if not len(bounds):
            return np.zeros(len(x))
        xc = np.clip(x, bounds[0], bounds[-1])
        i = np.clip(np.searchsorted(bounds, xc, side="right") - 1, 0, len(values) - 1)
        # segments are contiguous in a RateMap (gaps are zero-rate pieces)
        return integral[i] + (xc - bounds[i]) * values[i]

    sizes = (ends - starts).astype(np.float64)
    return (integ(ends) - integ(starts)) / np.maximum(sizes, 1.0)


@dataclass
class Accuracy:
    """How well a snapshot matches the ground truth of its window (byte-weighted)."""

    #: Mean |measured rate - true rate| per byte (rates in [0, 1]).
    rate_error: float
    #: Hot = true/measured rate >= ``hot_threshold``.
    hot_threshold: float
    hot_precision: float
    hot_recall: float
    measured_hot_bytes: int
    true_hot_bytes: int
    measured_wss_bytes: int
    true_wss_bytes: float


class GroundTruth(AccessModel):
    """An access model's truth, queried afterwards for any pages and time window."""

    def true_access_counts(self, start: int, end: int, start_us: int, end_us: int) -> IntArray:
        """Exact number of ticks of ``[start_us, end_us)`` each page of ``[start, end)`` was
        accessed in (one count per page). Cost: pages x ticks."""
        addrs = np.arange(start - start % PAGE_SIZE, end, PAGE_SIZE, dtype=np.int64)
        j0, j1 = self.tick_span(start_us, end_us)
        if len(addrs) * (j1 - j0) > 200_000_000:
            raise ValueError("ground-truth query too big; ask for fewer pages or a shorter window")
        counts = np.zeros(len(addrs), np.int64)
        for j in range(j0, j1):
            counts += self.accessed_in_tick(addrs, j)
        return counts

    def _breakpoints(self, lo: int, hi: int, tick: int) -> list[int]:
        pts = [lo, hi]
        for s, e in zip(self.area_starts.tolist(), self.area_ends.tolist()):
            pts.extend((s, e))
        for s, e, _ in self._hotspot_ranges(self.phase_of_tick(tick), tick):
            pts.extend((s, e))
        return [p for p in pts if lo <= p <= hi]

    def expected_rates(self, start: int, end: int, start_us: int, end_us: int) -> RateMap:
        """Analytic per-page rates over ``[start, end)`` x ``[start_us, end_us)``.

        Cost depends on the number of ticks and areas/hot spots, not on the size of the range.
        """
        j0, j1 = self.tick_span(start_us, end_us)
        nticks = j1 - j0
        if nticks > MAX_RATE_TICKS:
            ticks = np.linspace(j0, j1 - 1, MAX_RATE_TICKS).astype(np.int64).tolist()
        else:
            ticks = list(range(j0, j1))
        pts: set[int] = set()
        for j in ticks:
            pts.update(self._breakpoints(start, end, j))
        bounds = np.array(sorted(pts), np.int64)
        seg_starts, seg_ends = bounds[:-1], bounds[1:]
        rate_sum = np.zeros(len(seg_starts))
        log_miss = np.zeros(len(seg_starts))
        with np.errstate(divide="ignore"):
            for j in ticks:
                p = self.access_prob(seg_starts, j)
                rate_sum += p
                log_miss += np.log1p(-p)
        rate = rate_sum / len(ticks)
        p_any = 1.0 - np.exp(log_miss * (nticks / len(ticks)))
        return RateMap(seg_starts, seg_ends, rate, p_any, start_us, end_us)

    def _pieces(self, snap: Snapshot) -> tuple[IntArray, IntArray, IntArray, RateMap]:
        """Pieces of ``snap``'s regions on which both the regions and the truth are constant:
        ``(starts, ends, region_index, truth)``."""
        lo, hi = int(snap.starts[0]), int(snap.ends[-1])
        rm = self.expected_rates(lo, hi, snap.start_us, snap.end_us)
        bounds = np.union1d(np.concatenate([snap.starts, snap.ends]), rm.starts)
        bounds = bounds[(bounds >= lo) & (bounds <= hi)]
        ps, pe = bounds[:-1], bounds[1:]
        ri = np.clip(np.searchsorted(snap.starts, ps, side="right") - 1, 0, snap.nr_regions - 1)
        covered = ps < snap.ends[ri]
        return ps[covered], pe[covered], ri[covered], rm

    def truth_snapshot(self, snap: Snapshot) -> Snapshot:
        """A snapshot of the ground truth for ``snap``'s window and regions' address ranges.

        Regions are the pieces where the truth is constant; ``nr_accesses`` is the expected
        count rounded to ``snap``'s sampling resolution.
        """
        ps, pe, _, rm = self._pieces(snap)
        rate = rm.rate_at(ps, pe)
        nr = np.rint(rate * snap.max_nr_accesses).astype(np.int64)
        # merge neighbours with equal counts, for a compact snapshot
        if len(ps) > 1:
            new = np.concatenate([[True], (ps[1:] != pe[:-1]) | (nr[1:] != nr[:-1])])
            idx = np.flatnonzero(new)
            last = np.concatenate([idx[1:] - 1, [len(ps) - 1]])
            ps, pe, nr = ps[idx], pe[last], nr[idx]
        return Snapshot(
            target_index=snap.target_index,
            target_id=snap.target_id,
            start_us=snap.start_us,
            end_us=snap.end_us,
            sample_interval_us=snap.sample_interval_us,
            aggr_interval_us=snap.aggr_interval_us,
            starts=ps.copy(),
            ends=pe.copy(),
            nr_accesses=nr,
            age=np.zeros(len(nr), np.int64),
        )

    def accuracy(self, snap: Snapshot, hot_threshold: float = 0.5) -> Accuracy:
        """Compare a snapshot with the ground truth of its window, byte by byte."""
        ps, pe, ri, rm = self._pieces(snap)
        sizes = (pe - ps).astype(np.float64)
        true_rate = rm.rate_at(ps, pe)
        m_rate = snap.access_rate[ri]
        total = max(sizes.sum(), 1.0)
        m_hot = m_rate >= hot_threshold
        t_hot = true_rate >= hot_threshold
        both = float(sizes[m_hot & t_hot].sum())
        m_hot_b = float(sizes[m_hot].sum())
        t_hot_b = float(sizes[t_hot].sum())
        # the truth's working set inside the monitored regions only
        true_wss = float((sizes * _range_means(rm.starts, rm.ends, rm.p_any, ps, pe)).sum())
        return Accuracy(
            rate_error=float((np.abs(m_rate - true_rate) * sizes).sum() / total),
            hot_threshold=hot_threshold,
            hot_precision=both / m_hot_b if m_hot_b else 1.0,
            hot_recall=both / t_hot_b if t_hot_b else 1.0,
            measured_hot_bytes=int(m_hot_b),
            true_hot_bytes=int(t_hot_b),
            measured_wss_bytes=int(snap.sizes[snap.nr_accesses > 0].sum()),
            true_wss_bytes=true_wss,
        )
