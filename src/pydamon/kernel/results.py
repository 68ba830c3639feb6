"""Where a kernel-backed context gets its monitoring results from, each aggregation.

- :class:`TracefsResults`: the ``damon:damon_aggregated`` tracepoint in a trace instance of
  pydamon's own (:mod:`.tracefs`): every aggregation of every target, at no cost to the kdamond
  beyond the tracepoint.
- :class:`TriedRegionsResults`: where tracefs is unavailable, damo's ``--snapshot`` way: a
  ``stat`` scheme matching every region (one per target, kept to it by a ``target`` filter, when
  there are several targets) whose tried regions are read back (``update_schemes_tried_regions``,
  6.2+) once per aggregation interval.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pydamon.core.attrs import Attrs
from pydamon.damos.scheme import Action, Filter, FilterType, Scheme, TriedRegion
from pydamon.kernel.tracefs import AggregationAssembler, TraceInstance

TRACEFS = "tracefs"
TRIED_REGIONS = "tried_regions"
RESULT_SOURCES = (TRACEFS, TRIED_REGIONS)


@dataclass
class RegionsResult:
    """One aggregation's regions per target, as columns, and when it ended (monotonic µs)."""

    end_us: int
    starts: list[np.ndarray]
    ends: list[np.ndarray]
    nr_accesses: list[np.ndarray]
    ages: list[np.ndarray]


def _columns(rows: Sequence[tuple[int, int, int, int]]) -> tuple[np.ndarray, ...]:
    table = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
    return tuple(table[:, i].copy() for i in range(4))


class TracefsResults:
    """Aggregations read from a trace instance's ``trace_pipe``."""

    name = TRACEFS

    def __init__(self, instance: TraceInstance, nr_targets: int) -> None:
        self.instance = instance
        self.assembler = AggregationAssembler(nr_targets)
        self._ready: list[RegionsResult] = []

    def open(self) -> None:
        self.instance.open()

    @property
    def monotonic(self) -> bool:
        return self.instance.monotonic

    def started(self, kdamond_pid: int | None) -> None:
        self.assembler.pid = kdamond_pid
        if kdamond_pid is not None:
            self.instance.set_pid(kdamond_pid)

    @property
    def dropped(self) -> int:
        return self.assembler.dropped

    def next(self, timeout_s: float) -> RegionsResult | None:
        if not self._ready:
            for agg in self.assembler.feed(self.instance.read_lines(timeout_s)):
                cols = [_columns(rows) for rows in agg.regions]
                self._ready.append(
                    RegionsResult(
                        end_us=agg.timestamp_us,
                        starts=[c[0] for c in cols],
                        ends=[c[1] for c in cols],
                        nr_accesses=[c[2] for c in cols],
                        ages=[c[3] for c in cols],
                    )
                )
        return self._ready.pop(0) if self._ready else None

    def close(self) -> None:
        self.instance.close()


def snapshot_schemes(nr_targets: int) -> list[Scheme]:
    """``stat`` schemes whose tried regions are every region: one for a single target, else one
    per target keeping to it (a ``target`` filter rejecting the other targets' regions)."""
    if nr_targets == 1:
        return [Scheme(action=Action.STAT)]
    return [
        Scheme(
            action=Action.STAT,
            filters=[Filter(FilterType.TARGET, matching=False, allow=False, target_idx=i)],
        )
        for i in range(nr_targets)
    ]


class TriedRegionsResults:
    """Snapshots from the tried regions of the snapshot schemes, once per aggregation.

    ``read_tried`` is the context's ``update_schemes_tried_regions`` read-back (each scheme's
    tried regions; the kernel fills them during the next apply interval, so the write waits
    for it); the snapshot schemes are the last ``nr_targets`` schemes.
    """

    name = TRIED_REGIONS

    def __init__(self, nr_targets: int, attrs: Attrs) -> None:
        self.nr_targets = nr_targets
        self.attrs = attrs
        self.dropped = 0
        self._next_us = 0
        #: every scheme's tried regions of the last read (the user's schemes come first)
        self.last_tried: list[list[TriedRegion]] = []

    #: end_us is time.monotonic()'s
    monotonic = True

    def open(self) -> None:
        pass

    def started(self, kdamond_pid: int | None) -> None:
        # the first aggregation ends one interval after the kdamond starts
        self._next_us = _now_us() + self.attrs.aggr_interval_us

    def next_from(self, tried: list[list[TriedRegion]]) -> RegionsResult | None:
        self.last_tried = tried
        mine = tried[len(tried) - self.nr_targets :]
        if len(mine) != self.nr_targets:
            return None
        cols = [
            _columns([(r.start, r.end, r.nr_accesses, r.age) for r in regions]) for regions in mine
        ]
        if not any(len(c[0]) for c in cols):
            return None  # nothing tried yet (the kdamond has not aggregated)
        return RegionsResult(
            end_us=_now_us(),
            starts=[c[0] for c in cols],
            ends=[c[1] for c in cols],
            nr_accesses=[c[2] for c in cols],
            ages=[c[3] for c in cols],
        )

    def wait_s(self) -> float:
        """How long to wait before the next read so that reads come once per aggregation."""
        return max(0.0, (self._next_us - _now_us()) / 1e6)

    def read_done(self) -> None:
        self._next_us = max(self._next_us + self.attrs.aggr_interval_us, _now_us())

    def close(self) -> None:
        pass


def _now_us() -> int:
    return time.monotonic_ns() // 1000
