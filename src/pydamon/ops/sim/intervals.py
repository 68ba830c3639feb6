"""Interval maps: per-page state of a simulated address space as sorted byte ranges."""

from __future__ import annotations

from typing import Any

import numpy as np

from pydamon.ops.sim.access import FloatArray, IntArray


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

    def _within(self, start: int | None, end: int | None) -> tuple[IntArray, IntArray, FloatArray]:
        """The whole map, or its pieces inside ``[start, end)`` if both are given."""
        if start is None or end is None:
            return self.starts, self.ends, self.values
        return self.overlap(start, end)

    def weighted_bytes(self, start: int | None = None, end: int | None = None) -> float:
        """Sum of size x value over the map (inside ``[start, end)`` if given)."""
        s, e, v = self._within(start, end)
        return float(((e - s) * v).sum())

    def bytes_where(self, pred: Any, start: int | None = None, end: int | None = None) -> int:
        """Bytes of the pieces whose value satisfies ``pred`` (inside ``[start, end)`` if given)."""
        s, e, v = self._within(start, end)
        m = pred(v)
        return int((e[m] - s[m]).sum())
