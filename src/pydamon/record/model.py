"""The in-memory form of a record: every snapshot of every target, as columns.

A :class:`Record` keeps per-snapshot values (times, intervals, footprint) in arrays of length
``nr_snapshots`` and per-region values (start, end, nr_accesses, age) concatenated over all
snapshots in arrays of length ``nr_regions_total``; ``region_offsets[i]:region_offsets[i + 1]``
are the regions of snapshot ``i``. Reports work on these columns with numpy, so a record of hours
loads and renders in well under a second.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pydamon.core.snapshot import Snapshot

#: Value of a footprint column when it was not measured (e.g. no process target).
UNKNOWN = -1


class RecordError(ValueError):
    """A record file that cannot be read (truncated header, corrupted, unknown format)."""


@dataclass
class Footprint:
    """Memory footprint at one snapshot: the target's RSS/VSZ and the system's free memory."""

    rss_bytes: int = UNKNOWN
    vsz_bytes: int = UNKNOWN
    sys_free_bytes: int = UNKNOWN
    sys_total_bytes: int = UNKNOWN


@dataclass
class TargetInfo:
    """What one monitoring target was."""

    index: int
    target_id: int | None = None
    pid: int | None = None
    #: The command line for command targets, a workload name for simulations, or "" if unknown.
    name: str = ""


@dataclass
class Record:
    """A whole record: metadata and column arrays (see the module docstring)."""

    meta: dict[str, Any]
    targets: list[TargetInfo]
    snap_target: np.ndarray  # int32 [N]: target index of each snapshot
    snap_start_us: np.ndarray  # int64 [N]
    snap_end_us: np.ndarray  # int64 [N]
    snap_sample_us: np.ndarray  # int64 [N]
    snap_aggr_us: np.ndarray  # int64 [N]
    rss_bytes: np.ndarray  # int64 [N], UNKNOWN where not measured
    vsz_bytes: np.ndarray  # int64 [N]
    sys_free_bytes: np.ndarray  # int64 [N]
    sys_total_bytes: np.ndarray  # int64 [N]
    region_offsets: np.ndarray  # int64 [N + 1]
    starts: np.ndarray  # int64 [M]
    ends: np.ndarray  # int64 [M]
    nr_accesses: np.ndarray  # int64 [M]
    age: np.ndarray  # int64 [M] (aggregation intervals)
    #: True if the file was finalized; False for a record still being written or cut short.
    complete: bool = True
    #: Where it came from: "pydamon", "damo-json", "damo-json_compressed", "damo-perf_script".
    source_format: str = "pydamon"
    #: Non-fatal remarks of the reader (e.g. "stopped at a torn tail after 120 snapshots").
    warnings: list[str] = field(default_factory=list)

    # -- shape ----------------------------------------------------------------------------------
    @property
    def nr_snapshots(self) -> int:
        return int(self.snap_start_us.shape[0])

    @property
    def nr_regions_total(self) -> int:
        return int(self.starts.shape[0])

    @property
    def nr_regions(self) -> np.ndarray:
        """Number of regions of each snapshot."""
        return np.diff(self.region_offsets)

    @property
    def sizes(self) -> np.ndarray:
        return self.ends - self.starts

    @property
    def region_snapshot(self) -> np.ndarray:
        """Index of the snapshot each region belongs to ([M])."""
        return np.repeat(np.arange(self.nr_snapshots), self.nr_regions)

    @property
    def max_nr_accesses(self) -> np.ndarray:
        """Highest possible nr_accesses of each snapshot (samples per aggregation)."""
        sample = np.where(self.snap_sample_us > 0, self.snap_sample_us, 1)
        return np.maximum(self.snap_aggr_us // sample, 1)

    @property
    def duration_us(self) -> int:
        if not self.nr_snapshots:
            return 0
        return int(self.snap_end_us.max() - self.snap_start_us.min())

    def target_indexes(self) -> list[int]:
        return sorted({int(x) for x in np.unique(self.snap_target)})

    # -- access ---------------------------------------------------------------------------------
    def snapshot(self, i: int) -> Snapshot:
        lo, hi = int(self.region_offsets[i]), int(self.region_offsets[i + 1])
        tidx = int(self.snap_target[i])
        return Snapshot(
            target_index=tidx,
            target_id=self.target_id_of(tidx),
            start_us=int(self.snap_start_us[i]),
            end_us=int(self.snap_end_us[i]),
            sample_interval_us=int(self.snap_sample_us[i]),
            aggr_interval_us=int(self.snap_aggr_us[i]),
            starts=self.starts[lo:hi].astype(np.int64, copy=True),
            ends=self.ends[lo:hi].astype(np.int64, copy=True),
            nr_accesses=self.nr_accesses[lo:hi].astype(np.int64, copy=True),
            age=self.age[lo:hi].astype(np.int64, copy=True),
        )

    def snapshots(self, target_index: int | None = None) -> Iterator[Snapshot]:
        for i in range(self.nr_snapshots):
            if target_index is None or int(self.snap_target[i]) == target_index:
                yield self.snapshot(i)

    def footprint(self, i: int) -> Footprint:
        return Footprint(
            int(self.rss_bytes[i]),
            int(self.vsz_bytes[i]),
            int(self.sys_free_bytes[i]),
            int(self.sys_total_bytes[i]),
        )

    def target_id_of(self, index: int) -> int | None:
        for t in self.targets:
            if t.index == index:
                return t.target_id
        return None

    def select(self, mask: np.ndarray) -> Record:
        """A new record with only the snapshots where ``mask`` is true."""
        idx = np.nonzero(mask)[0]
        counts = self.nr_regions[idx]
        offsets = np.zeros(len(idx) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        # gather region ranges of the chosen snapshots at once
        if len(idx):
            starts_of = self.region_offsets[idx]
            take = np.repeat(starts_of - offsets[:-1], counts) + np.arange(int(offsets[-1]))
        else:
            take = np.zeros(0, np.int64)
        return Record(
            meta=self.meta,
            targets=self.targets,
            snap_target=self.snap_target[idx],
            snap_start_us=self.snap_start_us[idx],
            snap_end_us=self.snap_end_us[idx],
            snap_sample_us=self.snap_sample_us[idx],
            snap_aggr_us=self.snap_aggr_us[idx],
            rss_bytes=self.rss_bytes[idx],
            vsz_bytes=self.vsz_bytes[idx],
            sys_free_bytes=self.sys_free_bytes[idx],
            sys_total_bytes=self.sys_total_bytes[idx],
            region_offsets=offsets,
            starts=self.starts[take],
            ends=self.ends[take],
            nr_accesses=self.nr_accesses[take],
            age=self.age[take],
            complete=self.complete,
            source_format=self.source_format,
            warnings=list(self.warnings),
        )

    def for_target(self, target_index: int) -> Record:
        return self.select(self.snap_target == target_index)

    # -- building -------------------------------------------------------------------------------
    @classmethod
    def from_snapshots(
        cls,
        snapshots: list[Snapshot],
        *,
        meta: dict[str, Any] | None = None,
        targets: list[TargetInfo] | None = None,
        footprints: list[Footprint] | None = None,
        complete: bool = True,
        source_format: str = "pydamon",
    ) -> Record:
        n = len(snapshots)
        fps = footprints or [Footprint()] * n
        counts = np.fromiter((s.nr_regions for s in snapshots), np.int64, count=n)
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])

        def cat(name: str) -> np.ndarray:
            if not n:
                return np.zeros(0, np.int64)
            return np.concatenate([np.asarray(getattr(s, name), np.int64) for s in snapshots])

        def col(values: list[int]) -> np.ndarray:
            return np.asarray(values, np.int64).reshape(n)

        if targets is None:
            seen: dict[int, TargetInfo] = {}
            for s in snapshots:
                if s.target_index not in seen:
                    seen[s.target_index] = TargetInfo(s.target_index, s.target_id, s.target_id)
            targets = [seen[k] for k in sorted(seen)]
        return cls(
            meta=dict(meta or {}),
            targets=targets,
            snap_target=np.asarray([s.target_index for s in snapshots], np.int32).reshape(n),
            snap_start_us=col([s.start_us for s in snapshots]),
            snap_end_us=col([s.end_us for s in snapshots]),
            snap_sample_us=col([s.sample_interval_us for s in snapshots]),
            snap_aggr_us=col([s.aggr_interval_us for s in snapshots]),
            rss_bytes=col([f.rss_bytes for f in fps]),
            vsz_bytes=col([f.vsz_bytes for f in fps]),
            sys_free_bytes=col([f.sys_free_bytes for f in fps]),
            sys_total_bytes=col([f.sys_total_bytes for f in fps]),
            region_offsets=offsets,
            starts=cat("starts"),
            ends=cat("ends"),
            nr_accesses=cat("nr_accesses"),
            age=cat("age"),
            complete=complete,
            source_format=source_format,
        )

    @classmethod
    def concatenate(cls, parts: list[Record], meta: dict[str, Any] | None = None) -> Record:
        """Join records (e.g. the blocks of one file) in order."""
        if not parts:
            return cls.from_snapshots([], meta=meta)
        counts = np.concatenate([p.nr_regions for p in parts])
        offsets = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])

        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts])

        first = parts[0]
        return cls(
            meta=meta if meta is not None else first.meta,
            targets=first.targets,
            snap_target=cat("snap_target"),
            snap_start_us=cat("snap_start_us"),
            snap_end_us=cat("snap_end_us"),
            snap_sample_us=cat("snap_sample_us"),
            snap_aggr_us=cat("snap_aggr_us"),
            rss_bytes=cat("rss_bytes"),
            vsz_bytes=cat("vsz_bytes"),
            sys_free_bytes=cat("sys_free_bytes"),
            sys_total_bytes=cat("sys_total_bytes"),
            region_offsets=offsets,
            starts=cat("starts"),
            ends=cat("ends"),
            nr_accesses=cat("nr_accesses"),
            age=cat("age"),
            complete=all(p.complete for p in parts),
            source_format=first.source_format,
        )
