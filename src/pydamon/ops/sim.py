"""``sim``: a deterministic simulated address space with exact ground truth.

A :class:`~pydamon.ops.sim_workloads.WorkloadSpec` describes a process's memory areas and its
access phases. Time is cut into ticks (``spec.tick_us``); page ``P`` is accessed in tick ``j``
iff ``hash(seed, P, j) < p(P, j)``, where ``p`` comes from the phase active at tick ``j`` (area
probability, raised inside hot spots). The hash is a counter-based mixer (splitmix64), so

- sampling needs no per-page state: checking a region's sampling page costs a few numpy
  operations per region whatever the simulated memory size,
- the ground truth is exact and can be queried afterwards for any pages and time window
  (:meth:`SimOperations.true_access_counts`), and the expected per-page rates are known
  analytically for whole address ranges (:meth:`SimOperations.expected_rates`),
- a seed reproduces a run exactly.

A sampling window ``[t0, t1)`` (prepare -> check) sees a page accessed if it is accessed in any
tick overlapping the window. Windows longer than :data:`MAX_EXACT_TICKS` ticks (auto-tuned long
sampling intervals) draw "accessed at least once" from its exact probability with one hash
instead of testing every tick; the distribution is exact, but the event is not the OR of the
per-tick ground-truth events.

DAMOS actions change per-page state kept as interval maps (not per-page objects): residency
(``pageout`` pages out; touching a paged-out page costs a major fault and makes it resident),
huge-page backing (``hugepage``/``collapse`` back 2 MiB-aligned parts, ``nohugepage`` and
``pageout`` split them; an access check in a huge page sees the whole 2 MiB page's Accessed bit,
as the kernel's PMD check does), LRU priority (``cold``/``lru_deprio``, ``lru_prio``), NUMA
placement (``migrate_hot``/``migrate_cold`` to ``scheme.target_nid``). Refaults are computed
per interval from the access probabilities (expected values, so they cost nothing per page).
See :class:`SimEffects`; :attr:`SimOperations.metrics` serves ``free_mem_rate`` and the other
watermark/quota-goal metrics from this state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from pydamon.core.clock import Clock, VirtualClock
from pydamon.core.operations import ApplyResult, Operations, update_regions_access
from pydamon.core.regions import PAGE_SIZE, Regions
from pydamon.core.snapshot import Snapshot
from pydamon.damos.scheme import Scheme
from pydamon.damos.score import scheme_score
from pydamon.ops.sim_workloads import (
    WORKLOADS,
    Area,
    HotSpot,
    Phase,
    WorkloadError,
    WorkloadSpec,
    get_workload,
    load_workload,
    spec_from_dict,
)

if TYPE_CHECKING:
    from pydamon.core.context import Context, Target

__all__ = [
    "HUGE_PAGE_SIZE",
    "WORKLOADS",
    "Accuracy",
    "Area",
    "HotSpot",
    "IntervalMap",
    "Phase",
    "RateMap",
    "SimEffects",
    "SimOperations",
    "SimSpace",
    "WorkloadError",
    "WorkloadSpec",
    "get_workload",
    "load_workload",
    "spec_from_dict",
    "vaddr_init_ranges",
]

HUGE_PAGE_SIZE = 2 << 20
#: Longest sampling window (in ticks) checked tick by tick.
MAX_EXACT_TICKS = 64
#: Most ticks :meth:`SimSpace.expected_rates` evaluates; longer windows are subsampled evenly.
MAX_RATE_TICKS = 256

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
PAGE_SHIFT = PAGE_SIZE.bit_length() - 1

_TICK_MUL = 0xC2B2AE3D27D4EB4F
_MASK64 = (1 << 64) - 1


def _u64(value: int) -> npt.NDArray[np.uint64]:
    # 0-d arrays: numpy's scalar promotion costs more than the arithmetic on small arrays
    return np.array(value, dtype=np.uint64)


_GOLDEN = _u64(0x9E3779B97F4A7C15)
_M1 = _u64(0xBF58476D1CE4E5B9)
_M2 = _u64(0x94D049BB133111EB)
_S11, _S27, _S30, _S31 = _u64(11), _u64(27), _u64(30), _u64(31)
_TO_UNIT = 1.0 / (1 << 53)


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic), in place."""
    x ^= x >> _S30
    x *= _M1
    x ^= x >> _S27
    x *= _M2
    x ^= x >> _S31
    return x


def _uniform(key: int, pages: IntArray, tick: int) -> FloatArray:
    """A uniform [0, 1) number per page, fixed by (key, page, tick)."""
    salt = _u64((key + tick * _TICK_MUL) & _MASK64)
    x = pages.view(np.uint64) * _GOLDEN
    x ^= salt
    return ((_mix(x) >> _S11) * _TO_UNIT).astype(np.float64, copy=False)


def vaddr_init_ranges(areas: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The kernel vaddr's three initial regions: the areas minus the two biggest gaps."""
    areas = sorted(areas)
    if len(areas) < 3:
        return [(s, e) for s, e in areas] if len(areas) < 2 else [areas[0], areas[-1]]
    gaps = [(areas[i + 1][0] - areas[i][1], i) for i in range(len(areas) - 1)]
    # the two biggest gaps (earlier one first on ties), in address order
    cut = sorted(i for _, i in sorted(gaps, key=lambda g: (-g[0], g[1]))[:2])
    return [
        (areas[0][0], areas[cut[0]][1]),
        (areas[cut[0] + 1][0], areas[cut[1]][1]),
        (areas[cut[1] + 1][0], areas[-1][1]),
    ]


# -- interval maps (compact per-page state) ------------------------------------------------------


class IntervalMap:
    """Disjoint ``[start, end)`` byte ranges, each with a float value, in sorted numpy arrays."""

    def __init__(self) -> None:
        self.starts: IntArray = np.zeros(0, np.int64)
        self.ends: IntArray = np.zeros(0, np.int64)
        self.values: FloatArray = np.zeros(0, np.float64)

    def __len__(self) -> int:
        return int(self.starts.shape[0])

    def _cut(self, start: int, end: int) -> tuple[IntArray, IntArray, FloatArray]:
        """The parts of the map outside ``[start, end)``."""
        s, e, v = self.starts, self.ends, self.values
        left = e <= start
        right = s >= end
        mid = ~(left | right)
        # overlapping intervals leave a left and/or right remainder
        ls, le, lv = s[mid], np.minimum(e[mid], start), v[mid]
        keep_l = ls < le
        rs, re, rv = np.maximum(s[mid], end), e[mid], v[mid]
        keep_r = rs < re
        ns = np.concatenate([s[left], ls[keep_l], rs[keep_r], s[right]])
        ne = np.concatenate([e[left], le[keep_l], re[keep_r], e[right]])
        nv = np.concatenate([v[left], lv[keep_l], rv[keep_r], v[right]])
        order = np.argsort(ns, kind="stable")
        return ns[order], ne[order], nv[order]

    def remove(self, start: int, end: int) -> None:
        self.starts, self.ends, self.values = self._cut(start, end)

    def assign(self, start: int, end: int, value: float) -> None:
        if start >= end:
            return
        s, e, v = self._cut(start, end)
        i = int(np.searchsorted(s, start))
        self.starts = np.insert(s, i, start)
        self.ends = np.insert(e, i, end)
        self.values = np.insert(v, i, value)
        self.coalesce()

    def coalesce(self, tolerance: float = 0.0) -> None:
        """Merge adjacent intervals whose values differ by at most ``tolerance``."""
        if len(self) < 2:
            return
        join = (self.ends[:-1] == self.starts[1:]) & (
            np.abs(self.values[:-1] - self.values[1:]) <= tolerance
        )
        if not join.any():
            return
        first = np.concatenate([[True], ~join])
        idx = np.flatnonzero(first)
        last = np.concatenate([idx[1:] - 1, [len(self) - 1]])
        sizes = (self.ends - self.starts).astype(np.float64)
        weighted = np.add.reduceat(self.values * sizes, idx) / np.add.reduceat(sizes, idx)
        self.starts, self.ends, self.values = self.starts[idx], self.ends[last], weighted

    def overlap(self, start: int, end: int) -> tuple[IntArray, IntArray, FloatArray]:
        """Clipped pieces of the map inside ``[start, end)``."""
        m = (self.starts < end) & (self.ends > start)
        return (
            np.maximum(self.starts[m], start),
            np.minimum(self.ends[m], end),
            self.values[m],
        )

    def weighted_bytes(self, start: int | None = None, end: int | None = None) -> float:
        """Sum of size x value over the map (inside ``[start, end)`` if given)."""
        if start is None or end is None:
            s, e, v = self.starts, self.ends, self.values
        else:
            s, e, v = self.overlap(start, end)
        return float(((e - s) * v).sum())

    def bytes_where(self, pred: Any, start: int | None = None, end: int | None = None) -> int:
        if start is None or end is None:
            s, e, v = self.starts, self.ends, self.values
        else:
            s, e, v = self.overlap(start, end)
        m = pred(v)
        return int((e[m] - s[m]).sum())


# -- results --------------------------------------------------------------------------------------


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


@dataclass
class SimEffects:
    """What DAMOS actions did to a simulated address space (cumulative counters + state)."""

    mapped_bytes: int = 0
    #: Bytes currently resident (mapped minus paged out and not yet faulted back).
    resident_bytes: int = 0
    nonresident_bytes: int = 0
    #: Cumulative bytes paged out by ``pageout``.
    paged_out_bytes: int = 0
    #: Cumulative major faults (pages read back after a pageout), expected value.
    major_faults: float = 0.0
    #: Cumulative stall time of those faults (the simulated memory PSI).
    fault_stall_us: float = 0.0
    #: Cumulative bytes made resident ahead of use by ``willneed``/``collapse``.
    prefetched_bytes: int = 0
    huge_backed_bytes: int = 0
    #: Bytes currently deprioritised (``cold``/``lru_deprio``) or prioritised (``lru_prio``).
    deprioritized_bytes: int = 0
    prioritized_bytes: int = 0
    #: Bytes placed on each NUMA node by ``migrate_*`` (the rest is on node 0).
    node_bytes: dict[int, int] = field(default_factory=dict)
    #: Bytes each action was applied to (sum of ``sz_applied``).
    applied_bytes: dict[str, int] = field(default_factory=dict)


# -- one simulated address space ---------------------------------------------------------------


class SimSpace:
    """A workload's address space: access model, ground truth and DAMOS-affected state.

    Times given to the public methods are in the monitor's clock (µs); ``origin_us`` is the
    clock time of the workload's start.
    """

    def __init__(self, spec: WorkloadSpec, seed: int, origin_us: int = 0) -> None:
        spec.validate()
        self.spec = spec
        self.seed = seed
        self.origin_us = origin_us
        self._key = int(_mix(np.array([seed & _MASK64], np.uint64))[0])
        self.areas = spec.layout()
        names = [a[0] for a in self.areas]
        self.area_starts = np.array([a[1] for a in self.areas], np.int64)
        self.area_ends = np.array([a[2] for a in self.areas], np.int64)
        self.area_index = {n: i for i, n in enumerate(names)}
        self.tick_us = spec.tick_us
        # phase table: ticks and per-area probabilities
        self.phase_ticks = np.array(
            [max(p.duration_us // spec.tick_us, 1) for p in spec.phases], np.int64
        )
        self.phase_ends = np.cumsum(self.phase_ticks)
        self.cycle_ticks = int(self.phase_ends[-1])
        self.phase_probs = np.zeros((len(spec.phases), len(names)), np.float64)
        for i, p in enumerate(spec.phases):
            for area, prob in p.access.items():
                self.phase_probs[i, self.area_index[area]] = prob
        self._single_phase = len(spec.phases) == 1
        self._has_hotspots = any(p.hotspots for p in spec.phases)
        # state changed by DAMOS actions
        self.nonresident = IntervalMap()
        self.huge = IntervalMap()
        self.lru = IntervalMap()  # 1.0 prioritised, 0.0 deprioritised
        self.node = IntervalMap()  # value: NUMA node id
        self._effects = SimEffects(mapped_bytes=spec.mapped_bytes)

    # -- time ---------------------------------------------------------------------------------
    def tick_of(self, time_us: int) -> int:
        return (time_us - self.origin_us) // self.tick_us

    def phase_of_tick(self, tick: int) -> int:
        if tick < 0 or self._single_phase:
            return 0
        if self.spec.repeat:
            tick %= self.cycle_ticks
        elif tick >= self.cycle_ticks:
            return len(self.spec.phases) - 1
        return int(np.searchsorted(self.phase_ends, tick, side="right"))

    def valid_at(self, time_us: int) -> bool:
        end = self.spec.end_us
        return end is None or time_us - self.origin_us < end

    def _hotspot_ranges(self, phase: int, tick: int) -> list[tuple[int, int, float]]:
        """Byte ranges of the hot spots of ``phase`` at ``tick``."""
        out = []
        t_us = tick * self.tick_us
        for h in self.spec.phases[phase].hotspots:
            ai = self.area_index[h.area]
            a_start, a_end = int(self.area_starts[ai]), int(self.area_ends[ai])
            a_size = a_end - a_start
            size = min(h.size_bytes, a_size)
            if h.motion == "bounce":
                span = a_size - size
                pos = h.offset_bytes
                if h.period_us and span:
                    # forward in the first half of the period, back in the second
                    frac = (t_us % h.period_us) / h.period_us
                    pos = int(span * (2 * frac if frac < 0.5 else 2 - 2 * frac))
                pos = min(pos - pos % PAGE_SIZE, span)
                out.append((a_start + pos, a_start + pos + size, h.access_prob))
                continue
            pos = h.offset_bytes
            if h.period_us:
                pos += int(a_size * ((t_us % h.period_us) / h.period_us))
            pos %= a_size
            pos -= pos % PAGE_SIZE
            lo = a_start + pos
            hi = lo + size
            if hi <= a_end:
                out.append((lo, hi, h.access_prob))
            else:
                out.append((lo, a_end, h.access_prob))
                out.append((a_start, a_start + hi - a_end, h.access_prob))
        return out

    # -- the access model ------------------------------------------------------------------------
    def access_prob(self, addrs: IntArray, tick: int) -> FloatArray:
        """Per-tick access probability of the pages holding ``addrs`` at ``tick``."""
        phase = self.phase_of_tick(tick)
        # index -1 (before the first area) reads the last area; "ai >= 0" masks it out
        ai = np.searchsorted(self.area_starts, addrs, side="right") - 1
        mapped = (ai >= 0) & (addrs < self.area_ends[ai])
        p = np.where(mapped, self.phase_probs[phase][ai], 0.0)
        if not self._has_hotspots:
            return p
        for lo, hi, prob in self._hotspot_ranges(phase, tick):
            inside = (addrs >= lo) & (addrs < hi)
            p = np.where(inside, np.maximum(p, prob), p)
        return p

    def accessed_in_tick(self, addrs: IntArray, tick: int) -> npt.NDArray[np.bool_]:
        """Ground truth: whether each page holding ``addrs`` is accessed in ``tick``."""
        addrs = np.asarray(addrs, dtype=np.int64)
        pages = addrs >> PAGE_SHIFT
        return _uniform(self._key, pages, tick) < self.access_prob(addrs, tick)

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
        j0 = self.tick_of(start_us)
        j1 = max(-(-(end_us - self.origin_us) // self.tick_us), j0 + 1)
        hit = self._pages_accessed(addrs, j0, j1)
        if len(self.huge):
            hi = np.searchsorted(self.huge.starts, addrs, side="right") - 1
            in_huge = (hi >= 0) & (addrs < self.huge.ends[hi])
            if in_huge.any():
                hit[in_huge] = self._huge_pages_accessed(addrs[in_huge], j0, j1)
        return hit

    def _pages_accessed(self, addrs: IntArray, j0: int, j1: int) -> npt.NDArray[np.bool_]:
        if j1 - j0 == 1:
            return self.accessed_in_tick(addrs, j0)
        if j1 - j0 <= MAX_EXACT_TICKS:
            hit = np.zeros(len(addrs), np.bool_)
            for j in range(j0, j1):
                hit |= self.accessed_in_tick(addrs, j)
            return hit
        # long window: P(any) = 1 - prod(1 - p), from evenly spaced ticks
        ticks = np.linspace(j0, j1 - 1, MAX_EXACT_TICKS).astype(np.int64)
        log_miss = np.zeros(len(addrs))
        with np.errstate(divide="ignore"):
            for j in ticks.tolist():
                log_miss += np.log1p(-self.access_prob(addrs, j))
        p_any = 1.0 - np.exp(log_miss * ((j1 - j0) / len(ticks)))
        # a hash "tick" far from real ticks, so this draw is independent of them
        return _uniform(self._key ^ 0x5DEECE66D, addrs >> PAGE_SHIFT, j0 * 7919 + j1) < p_any

    def _huge_pages_accessed(self, addrs: IntArray, j0: int, j1: int) -> npt.NDArray[np.bool_]:
        """Whether the 2 MiB pages holding ``addrs`` had any access in ticks ``[j0, j1)``."""
        base = addrs - addrs % HUGE_PAGE_SIZE
        nr_probes = 8
        step = HUGE_PAGE_SIZE // nr_probes
        probes = (base[:, None] + np.arange(nr_probes, dtype=np.int64) * step + step // 2).ravel()
        pages_per_probe = HUGE_PAGE_SIZE // PAGE_SIZE / nr_probes
        key = self._key ^ 0x2D2D2D2D2D2D2D2D
        hpages = base >> 21

        def log_miss_at(j: int) -> FloatArray:
            with np.errstate(divide="ignore"):
                lm = np.log1p(-self.access_prob(probes, j)).reshape(-1, nr_probes).sum(1)
            return lm * pages_per_probe

        if j1 - j0 <= MAX_EXACT_TICKS:
            hit = np.zeros(len(addrs), np.bool_)
            for j in range(j0, j1):
                hit |= _uniform(key, hpages, j) < 1.0 - np.exp(log_miss_at(j))
            return hit
        ticks = np.linspace(j0, j1 - 1, MAX_EXACT_TICKS).astype(np.int64).tolist()
        log_miss = sum((log_miss_at(j) for j in ticks), np.zeros(len(addrs)))
        p_any = 1.0 - np.exp(log_miss * ((j1 - j0) / len(ticks)))
        return _uniform(key ^ 0x5DEECE66D, hpages, j0 * 7919 + j1) < p_any

    # -- ground truth ----------------------------------------------------------------------------
    def true_access_counts(self, start: int, end: int, start_us: int, end_us: int) -> IntArray:
        """Exact number of ticks of ``[start_us, end_us)`` each page of ``[start, end)`` was
        accessed in (one count per page). Cost: pages x ticks."""
        addrs = np.arange(start - start % PAGE_SIZE, end, PAGE_SIZE, dtype=np.int64)
        j0 = self.tick_of(start_us)
        j1 = max(-(-(end_us - self.origin_us) // self.tick_us), j0 + 1)
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
        j0 = self.tick_of(start_us)
        j1 = max(-(-(end_us - self.origin_us) // self.tick_us), j0 + 1)
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

    # -- DAMOS effects ---------------------------------------------------------------------------
    def _mapped_pieces(self, start: int, end: int) -> list[tuple[int, int]]:
        out = []
        for s, e in zip(self.area_starts.tolist(), self.area_ends.tolist()):
            lo, hi = max(s, start), min(e, end)
            if lo < hi:
                out.append((lo, hi))
        return out

    def advance_faults(self, start_us: int, end_us: int) -> None:
        """Fault back paged-out pages the workload touched in ``[start_us, end_us)``.

        Each non-resident interval keeps the fraction of its pages still paged out; it shrinks
        by the probability of no access over the window, estimated at up to 8 pages of the
        interval (expected values). Cost: number of intervals, not pages.
        """
        nr = self.nonresident
        if not len(nr):
            return
        j0 = self.tick_of(start_us)
        j1 = max(-(-(end_us - self.origin_us) // self.tick_us), j0 + 1)
        probe_ticks = list(range(j0, j1)) if j1 - j0 <= 4 else [j0, (j0 + j1) // 2, j1 - 1]
        k = 8
        frac = (np.arange(k) + 0.5) / k
        sizes = nr.ends - nr.starts
        probe = nr.starts[:, None] + (sizes[:, None] * frac[None, :]).astype(np.int64)
        flat = probe.ravel()
        log_miss = np.zeros(len(flat))
        with np.errstate(divide="ignore"):
            for j in probe_ticks:
                log_miss += np.log1p(-self.access_prob(flat, j))
        miss = np.exp(log_miss * ((j1 - j0) / len(probe_ticks))).reshape(probe.shape).mean(1)
        before = nr.values
        after = before * miss
        faulted_bytes = float(((before - after) * sizes).sum())
        faults = faulted_bytes / PAGE_SIZE
        self._effects.major_faults += faults
        self._effects.fault_stall_us += faults * self.spec.major_fault_us
        nr.values = after
        keep = after > 1e-4
        if not keep.all():
            nr.starts, nr.ends, nr.values = nr.starts[keep], nr.ends[keep], nr.values[keep]
        nr.coalesce(tolerance=1e-3)

    def apply(self, start: int, end: int, action: str, target_nid: int | None = None) -> int:
        """Apply a DAMOS action to ``[start, end)``; return the bytes it was applied to."""
        pieces = self._mapped_pieces(start, end)
        if not pieces:
            return 0
        applied = 0
        for lo, hi in pieces:
            applied += self._apply_piece(lo, hi, action, target_nid)
        self._effects.applied_bytes[action] = self._effects.applied_bytes.get(action, 0) + applied
        return applied

    def _apply_piece(self, lo: int, hi: int, action: str, target_nid: int | None) -> int:
        size = hi - lo
        if action == "pageout":
            resident = size - self.nonresident.weighted_bytes(lo, hi)
            paged = int(round(resident / PAGE_SIZE)) * PAGE_SIZE
            self.nonresident.assign(lo, hi, 1.0)
            # a huge page is split to be swapped out
            self.huge.remove(lo, hi)
            self._effects.paged_out_bytes += paged
            return paged
        if action == "willneed":
            self._effects.prefetched_bytes += int(self.nonresident.weighted_bytes(lo, hi))
            self.nonresident.remove(lo, hi)
            return size
        if action in ("hugepage", "collapse"):
            # only whole, aligned 2 MiB parts can be backed by huge pages; treated as collapsed
            # at once (khugepaged's delay is not modelled)
            h_lo = -(-lo // HUGE_PAGE_SIZE) * HUGE_PAGE_SIZE
            h_hi = hi // HUGE_PAGE_SIZE * HUGE_PAGE_SIZE
            if h_lo >= h_hi:
                return 0
            if action == "collapse":
                # collapsing reads paged-out pages back in
                self._effects.prefetched_bytes += int(self.nonresident.weighted_bytes(h_lo, h_hi))
                self.nonresident.remove(h_lo, h_hi)
            self.huge.assign(h_lo, h_hi, 1.0)
            return h_hi - h_lo
        if action == "nohugepage":
            self.huge.remove(lo, hi)
            return size
        if action in ("cold", "lru_deprio"):
            self.lru.assign(lo, hi, 0.0)
            return size
        if action == "lru_prio":
            self.lru.assign(lo, hi, 1.0)
            return size
        if action in ("migrate_hot", "migrate_cold"):
            nid = 0 if target_nid is None else int(target_nid)
            if nid == 0:
                self.node.remove(lo, hi)
            else:
                self.node.assign(lo, hi, float(nid))
            return size
        if action == "stat":
            return size
        raise ValueError(f"the sim operations set does not know the action {action!r}")

    @property
    def effects(self) -> SimEffects:
        e = self._effects
        mapped = self.spec.mapped_bytes
        nonres = int(self.nonresident.weighted_bytes())
        e.nonresident_bytes = nonres
        e.resident_bytes = mapped - nonres
        e.huge_backed_bytes = int(self.huge.weighted_bytes())
        e.deprioritized_bytes = self.lru.bytes_where(lambda v: v == 0.0)
        e.prioritized_bytes = self.lru.bytes_where(lambda v: v == 1.0)
        nodes: dict[int, int] = {}
        for s, en, v in zip(self.node.starts, self.node.ends, self.node.values):
            nodes[int(v)] = nodes.get(int(v), 0) + int(en - s)
        nodes[0] = mapped - sum(nodes.values())
        e.node_bytes = nodes
        return e

    @property
    def memory_total_bytes(self) -> int:
        return self.spec.memory_total_bytes or 2 * self.spec.mapped_bytes

    def free_mem_rate_permil(self) -> int:
        """Free memory per mille of the simulated machine's total (watermarks' metric)."""
        total = self.memory_total_bytes
        used = self.effects.resident_bytes + self.spec.other_used_bytes
        return max(total - used, 0) * 1000 // total


# -- the operations set ------------------------------------------------------------------------


def _make_metrics(ops: SimOperations) -> Any:
    """A :class:`pydamon.damos.metrics.MetricsSource` reading the simulated machine."""
    from pydamon.damos.metrics import MetricsSource

    BP = 10000

    class SimMetrics(MetricsSource):
        def free_mem_rate_permil(self) -> int | None:
            return ops.space(0).free_mem_rate_permil()

        def some_mem_psi_total_us(self) -> int | None:
            return int(sum(s.effects.fault_stall_us for s in ops.spaces))

        def node_mem_bp(self, nid: int | None, used: bool) -> int:
            space = ops.space(0)
            total = space.memory_total_bytes
            if nid is None:
                in_use = space.effects.resident_bytes + space.spec.other_used_bytes
            else:
                in_use = space.effects.node_bytes.get(nid, 0)
            in_use = min(in_use, total)
            return (in_use if used else total - in_use) * BP // total

        def node_memcg_bp(self, nid: int | None, path: str | None, used: bool) -> int:
            # the simulated process is the only memcg
            space = ops.space(0)
            total = space.memory_total_bytes
            in_use = min(space.effects.resident_bytes, total)
            return (in_use if used else total - in_use) * BP // total

        def lru_mem_bp(self, active: bool) -> int:
            e = ops.space(0).effects
            resident = max(e.resident_bytes, 1)
            inactive = min(e.deprioritized_bytes, resident)
            return (resident - inactive if active else inactive) * BP // resident

    return SimMetrics()


class SimOperations(Operations[Scheme]):
    """Operations set over simulated address spaces (one workload per target, by index).

    ``seed`` fixes the workloads' accesses; by default it is the context's seed (or drawn from
    its ``rng``). Sampling addresses come from the context's ``rng``.

    Ground truth and effects are per target: :meth:`space`, or the shortcuts
    :meth:`true_access_counts`, :meth:`expected_rates`, :meth:`accuracy`,
    :meth:`truth_snapshot` and :attr:`effects` (target 0 unless ``target_index`` is given).
    """

    name = "sim"

    def __init__(
        self,
        workloads: WorkloadSpec | str | list[WorkloadSpec | str] = "hotcold",
        *,
        seed: int | None = None,
        total_bytes: int | None = None,
    ) -> None:
        items = workloads if isinstance(workloads, list) else [workloads]
        self.specs: list[WorkloadSpec] = []
        for w in items:
            if isinstance(w, str):
                w = get_workload(w) if total_bytes is None else get_workload(w, total_bytes)
            w.validate()
            self.specs.append(w)
        self.seed = seed
        self.spaces: list[SimSpace] = []
        self._window_start_us = 0
        self._last_faults_us: int | None = None
        self._metrics: Any = None

    def default_clock(self) -> Clock:
        return VirtualClock()

    def space(self, target_index: int = 0) -> SimSpace:
        if not self.spaces:
            raise RuntimeError("the sim operations set is not initialised; run a context first")
        return self.spaces[target_index]

    def _space_for(self, ctx: Context, target: Target) -> SimSpace:
        space = target.ops_private
        if not isinstance(space, SimSpace):
            raise RuntimeError("target is not one of this sim operations set's targets")
        return space

    # -- Operations ---------------------------------------------------------------------------
    def init(self, ctx: Context) -> None:
        if not ctx.targets:
            raise ValueError("the sim operations set needs at least one target")
        seed = self.seed
        if seed is None:
            seed = ctx.seed if ctx.seed is not None else int(ctx.rng.integers(0, 2**62))
        self.seed = seed
        now = ctx.clock.now_us()
        # one space per target; a re-run keeps the existing ones (and their state)
        for i in range(len(self.spaces), len(ctx.targets)):
            self.spaces.append(SimSpace(self.specs[i % len(self.specs)], seed + 7919 * i, now))
        for i, t in enumerate(ctx.targets):
            space = self.spaces[i]
            t.ops_private = space
            if len(t.regions):
                continue  # regions kept from an earlier run of this context
            if t.ranges:
                t.regions = Regions()
                t.regions.set_regions(t.ranges, ctx.min_region_sz)
                continue
            ranges = vaddr_init_ranges(
                list(zip(space.area_starts.tolist(), space.area_ends.tolist()))
            )
            regions = Regions(ranges)
            total = regions.total_size
            sz = max(total // max(ctx.attrs.min_nr_regions, 1), ctx.min_region_sz)
            # split the last ones first so the indices of the earlier ones stay valid
            for j in reversed(range(len(ranges))):
                nr_pieces = max(int(regions.sizes[j]) // sz, 1)
                regions.evenly_split(j, nr_pieces, ctx.min_region_sz)
            t.regions = regions
        self._last_faults_us = now

    def update(self, ctx: Context) -> None:
        # The simulated layout never changes, so the vaddr-style update has nothing to do.
        return None

    def prepare_access_checks(self, ctx: Context) -> None:
        self._window_start_us = ctx.clock.now_us()
        for t in ctx.targets:
            t.regions.pick_sampling_addrs(ctx.rng)

    def check_accesses(self, ctx: Context) -> int:
        now = ctx.clock.now_us()
        max_nr = 0
        for t in ctx.targets:
            space = self._space_for(ctx, t)
            accessed = space.accessed_in_window(t.regions.sampling_addr, self._window_start_us, now)
            max_nr = max(max_nr, update_regions_access(ctx, t, accessed))
            if len(space.nonresident):
                space.advance_faults(self._last_faults_us or self._window_start_us, now)
        self._last_faults_us = now
        return max_nr

    def target_valid(self, ctx: Context, target: Target) -> bool:
        space = target.ops_private
        if not isinstance(space, SimSpace):
            return True
        return space.valid_at(ctx.clock.now_us())

    def get_scheme_score(
        self, ctx: Context, target: Target, region_index: int, scheme: Scheme
    ) -> int:
        # the kernel's ops sets score with ops-common's cold/hot scores
        return scheme_score(ctx, target, region_index, scheme)

    def apply_scheme(
        self, ctx: Context, target: Target, start: int, end: int, scheme: Scheme
    ) -> ApplyResult:
        action = str(scheme.action)
        space = self._space_for(ctx, target)
        mapped = sum(hi - lo for lo, hi in space._mapped_pieces(start, end))
        applied = space.apply(start, end, action, scheme.target_nid)
        return ApplyResult(sz_applied=applied, sz_ops_filter_passed=mapped)

    # -- ground truth and effects shortcuts ---------------------------------------------------
    def true_access_counts(
        self, start: int, end: int, start_us: int, end_us: int, target_index: int = 0
    ) -> IntArray:
        return self.space(target_index).true_access_counts(start, end, start_us, end_us)

    def expected_rates(
        self, start: int, end: int, start_us: int, end_us: int, target_index: int = 0
    ) -> RateMap:
        return self.space(target_index).expected_rates(start, end, start_us, end_us)

    def truth_snapshot(self, snap: Snapshot) -> Snapshot:
        return self.space(snap.target_index).truth_snapshot(snap)

    def accuracy(self, snap: Snapshot, hot_threshold: float = 0.5) -> Accuracy:
        return self.space(snap.target_index).accuracy(snap, hot_threshold)

    @property
    def effects(self) -> SimEffects:
        """Effects of DAMOS actions on target 0's address space (see :meth:`space`)."""
        return self.space(0).effects

    @property
    def metrics(self) -> Any:
        """A ``pydamon.damos.metrics.MetricsSource`` over the simulated machine (target 0)."""
        if self._metrics is None:
            self._metrics = _make_metrics(self)
        return self._metrics

    def free_mem_rate_permil(self) -> int:
        return self.space(0).free_mem_rate_permil()

    @property
    def memory_total_bytes(self) -> int:
        return self.space(0).memory_total_bytes if self.spaces else 2 * self.specs[0].mapped_bytes


def layout_ranges(spec: WorkloadSpec) -> list[tuple[int, int]]:
    """Address ranges of a workload's areas (for fvaddr-style targets with given ranges)."""
    return [(s, e) for _, s, e in spec.layout()]
