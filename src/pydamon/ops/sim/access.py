"""The access model of a simulated address space: which page is accessed in which tick.

Page ``P`` is accessed in tick ``j`` iff ``hash(seed, P, j) < p(P, j)``, where ``p`` comes from the
phase active at tick ``j`` (area probability, raised inside hot spots). The hash is a
counter-based mixer (splitmix64), so the model needs no per-page state and a seed reproduces a run.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pydamon.core.regions import PAGE_SHIFT, PAGE_SIZE
from pydamon.ops.pagefacts import HPAGE_PMD_SIZE
from pydamon.ops.sim.workloads import WorkloadSpec

HUGE_PAGE_SIZE = HPAGE_PMD_SIZE
#: Longest sampling window (in ticks) checked tick by tick.
MAX_EXACT_TICKS = 64
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

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


class AccessModel:
    """A workload's accesses over its laid-out areas, tick by tick (no DAMOS-affected state).

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

    def tick_span(self, start_us: int, end_us: int) -> tuple[int, int]:
        """The ticks ``[j0, j1)`` overlapping ``[start_us, end_us)`` (at least one)."""
        j0 = self.tick_of(start_us)
        return j0, max(-(-(end_us - self.origin_us) // self.tick_us), j0 + 1)

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

    def _mapped_pieces(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of ``[start, end)`` inside the workload's areas."""
        out = []
        for s, e in zip(self.area_starts.tolist(), self.area_ends.tolist()):
            lo, hi = max(s, start), min(e, end)
            if lo < hi:
                out.append((lo, hi))
        return out
