"""The in-memory form of a record: every snapshot of every target, as columns.

A :class:`Record` keeps per-snapshot values (times, intervals, footprint) in arrays of length
``nr_snapshots`` and per-region values (start, end, nr_accesses, age) concatenated over all
snapshots in arrays of length ``nr_regions_total``; ``region_offsets[i]:region_offsets[i + 1]``
are the regions of snapshot ``i``. Reports work on these columns with numpy, so a record of hours
loads and renders in well under a second.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pydamon.core.snapshot import Snapshot

#: Value of a footprint column when it was not measured (e.g. no process target).
UNKNOWN = -1


class RecordError(ValueError):
    """A record file that cannot be read (truncated header, corrupted, unknown format)."""


class CorruptColumn(RecordError):
    """A checksum mismatch in a column of a mapped (version 2) record, found when first used:
    read the record again with ``verify=True`` to skip the damaged snapshots."""


@dataclass
class Damage:
    """A damaged part of a record file that the reader skipped."""

    first_byte: int
    end_byte: int
    #: What was wrong: "bad checksum", "bad snapshot block (...)", "corrupted size column", ...
    what: str
    #: Snapshots read before it (the index, among those read, of the first one after it).
    after_snapshot: int
    #: Snapshots lost there, if known (the footer's count, or the snapshots of the columns).
    nr_snapshots: int | None = None
    #: Monitor time (µs since the record start) of the gap it left, if known.
    gap_from_us: int | None = None
    gap_to_us: int | None = None

    def describe(self) -> str:
        lost = "snapshots" if self.nr_snapshots is None else f"{self.nr_snapshots} snapshot(s)"
        gap = ""
        if self.gap_from_us is not None or self.gap_to_us is not None:
            lo = "start" if self.gap_from_us is None else f"{self.gap_from_us / 1e6:.3f} s"
            hi = "end" if self.gap_to_us is None else f"{self.gap_to_us / 1e6:.3f} s"
            gap = f", {lo} to {hi}"
        return (
            f"bytes {self.first_byte}-{self.end_byte} damaged ({self.what}), skipped: {lost} "
            f"lost after the first {self.after_snapshot} snapshots{gap}"
        )


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


class RegionStore(Protocol):
    """Per-region columns held narrow somewhere else (e.g. mapped from a record file), decoded to
    int64 for a range of snapshots on demand. Indexes are the store's own (whole file)."""

    def starts_ends(self, snap_lo: int, snap_hi: int) -> tuple[np.ndarray, np.ndarray]: ...

    def sizes(self, lo: int, hi: int) -> np.ndarray: ...

    def size_units(self, lo: int, hi: int) -> tuple[np.ndarray, int]: ...

    def runs(self, snap_lo: int, snap_hi: int) -> tuple[np.ndarray, np.ndarray] | None: ...

    def counts(self, name: str, lo: int, hi: int) -> np.ndarray:
        """``nr_accesses`` or ``age`` of regions ``lo:hi``, in their stored narrow dtype."""
        ...


def _widen_counts(arr: np.ndarray) -> np.ndarray:
    """int32 if the values surely fit (as the block decoder gives), else int64."""
    small = arr.dtype.itemsize <= 2 or arr.dtype == np.int32
    return arr.astype(np.int32 if small else np.int64)


class Record:
    """A whole record: metadata and column arrays (see the module docstring).

    Per-snapshot columns are plain int64 arrays. The per-region columns (``starts``, ``ends``,
    ``nr_accesses``, ``age``) are either given as arrays or, for records read from a columnar
    (version 2) file, decoded from a :class:`RegionStore` when first used; :meth:`slice` and
    :meth:`chunks` give views of snapshot ranges whose columns decode only that range, so reports
    over hours of snapshots never hold int64 copies of every region at once.
    """

    def __init__(
        self,
        meta: dict[str, Any],
        targets: list[TargetInfo],
        snap_target: np.ndarray,  # int32 [N]: target index of each snapshot
        snap_start_us: np.ndarray,  # int64 [N]
        snap_end_us: np.ndarray,  # int64 [N]
        snap_sample_us: np.ndarray,  # int64 [N]
        snap_aggr_us: np.ndarray,  # int64 [N]
        rss_bytes: np.ndarray,  # int64 [N], UNKNOWN where not measured
        vsz_bytes: np.ndarray,  # int64 [N]
        sys_free_bytes: np.ndarray,  # int64 [N]
        sys_total_bytes: np.ndarray,  # int64 [N]
        region_offsets: np.ndarray,  # int64 [N + 1]
        starts: np.ndarray | None = None,  # int64 [M]
        ends: np.ndarray | None = None,  # int64 [M]
        nr_accesses: np.ndarray | None = None,  # int [M]
        age: np.ndarray | None = None,  # int [M] (aggregation intervals)
        complete: bool = True,
        source_format: str = "pydamon",
        warnings: list[str] | None = None,
        *,
        store: RegionStore | None = None,
        store_snapshot: int = 0,
        store_region: int = 0,
        snap_nr_samples: np.ndarray | None = None,  # int64 [N], UNKNOWN where not measured
        snap_window_us: np.ndarray | None = None,  # int64 [N]: measured mean access window
    ) -> None:
        self.meta = meta
        self.targets = targets
        self.snap_target = snap_target
        self.snap_start_us = snap_start_us
        self.snap_end_us = snap_end_us
        self.snap_sample_us = snap_sample_us
        self.snap_aggr_us = snap_aggr_us
        self.rss_bytes = rss_bytes
        self.vsz_bytes = vsz_bytes
        self.sys_free_bytes = sys_free_bytes
        self.sys_total_bytes = sys_total_bytes
        unknown = np.full(len(snap_start_us), UNKNOWN, np.int64)
        #: samples each aggregation really took, and their mean access window (UNKNOWN: older
        #: records, kernel snapshots)
        self.snap_nr_samples = unknown if snap_nr_samples is None else snap_nr_samples
        self.snap_window_us = unknown.copy() if snap_window_us is None else snap_window_us
        self.region_offsets = region_offsets
        #: True if the file was finalized; False for a record still being written or cut short.
        self.complete = complete
        #: Where it came from: "pydamon", "damo-json", "damo-json_compressed", ...
        self.source_format = source_format
        #: Non-fatal remarks of the reader (e.g. "stopped at a torn tail after 120 snapshots").
        self.warnings: list[str] = list(warnings) if warnings else []
        #: Damaged parts of the file the reader skipped (see :class:`Damage`).
        self.damage: list[Damage] = []
        if store is None and (starts is None or ends is None or nr_accesses is None or age is None):
            raise TypeError("a Record needs starts, ends, nr_accesses and age, or a store")
        self._store = store
        self._store_snapshot = store_snapshot
        self._store_region = store_region
        self._starts = starts
        self._ends = ends
        self._nr_accesses = nr_accesses
        self._age = age

    def __repr__(self) -> str:
        lazy = ", lazy" if self._store is not None else ""
        return (
            f"Record({self.nr_snapshots} snapshots, {self.nr_regions_total} regions, "
            f"{self.source_format}, complete={self.complete}{lazy})"
        )

    # -- per-region columns (decoded on first use for store-backed records) --------------------
    def _region_range(self) -> tuple[int, int]:
        r0 = self._store_region
        return r0, r0 + int(self.region_offsets[-1])

    def _decode_positions(self) -> None:
        assert self._store is not None
        s0 = self._store_snapshot
        self._starts, self._ends = self._store.starts_ends(s0, s0 + self.nr_snapshots)

    @property
    def starts(self) -> np.ndarray:
        if self._starts is None:
            self._decode_positions()
        assert self._starts is not None
        return self._starts

    @property
    def ends(self) -> np.ndarray:
        if self._ends is None:
            self._decode_positions()
        assert self._ends is not None
        return self._ends

    @property
    def nr_accesses(self) -> np.ndarray:
        if self._nr_accesses is None:
            assert self._store is not None
            self._nr_accesses = _widen_counts(
                self._store.counts("nr_accesses", *self._region_range())
            )
        return self._nr_accesses

    @property
    def age(self) -> np.ndarray:
        if self._age is None:
            assert self._store is not None
            self._age = _widen_counts(self._store.counts("age", *self._region_range()))
        return self._age

    def narrow_counts(self, name: str) -> np.ndarray:
        """``nr_accesses`` or ``age`` without widening (a view of the file when store-backed):
        for comparisons and sums, not for arithmetic that could overflow a narrow dtype."""
        if self._store is not None and getattr(self, "_" + name) is None:
            return self._store.counts(name, *self._region_range())
        return np.asarray(getattr(self, name))

    def size_units(self) -> tuple[np.ndarray, int]:
        """(sizes >> shift, shift): the stored narrow sizes of a store-backed record (a view),
        else (sizes, 0). Sum them with an int64 accumulator, then shift."""
        if self._store is not None and self._starts is None:
            return self._store.size_units(*self._region_range())
        return self.sizes, 0

    def runs(self) -> tuple[np.ndarray, np.ndarray]:
        """(starts, ends) of the runs of touching regions of each snapshot: the same union of
        address ranges as all regions, in far fewer pieces (all regions, if a snapshot's are not
        in address order)."""
        if self._store is not None and self._starts is None:
            s0 = self._store_snapshot
            got = self._store.runs(s0, s0 + self.nr_snapshots)
            if got is not None:
                return got
        starts, ends = self.starts, self.ends
        if len(starts) < 2:
            return starts, ends
        new_snap = np.zeros(len(starts), bool)
        new_snap[self.region_offsets[:-1][self.region_offsets[:-1] < len(starts)]] = True
        if not np.all((starts[1:] >= ends[:-1]) | new_snap[1:]):
            return starts, ends
        run_start = new_snap
        run_start[1:] |= starts[1:] != ends[:-1]
        run_start[0] = True
        idx = np.nonzero(run_start)[0]
        return starts[idx], np.maximum.reduceat(ends, idx)

    @property
    def is_lazy(self) -> bool:
        """True if the per-region columns come from a store (decoded per use)."""
        return self._store is not None

    # -- shape ----------------------------------------------------------------------------------
    @property
    def nr_snapshots(self) -> int:
        return int(self.snap_start_us.shape[0])

    @property
    def nr_regions_total(self) -> int:
        return int(self.region_offsets[-1]) if len(self.region_offsets) else 0

    @property
    def nr_regions(self) -> np.ndarray:
        """Number of regions of each snapshot."""
        return np.diff(self.region_offsets)

    @property
    def sizes(self) -> np.ndarray:
        if self._store is not None and self._starts is None:
            return self._store.sizes(*self._region_range())
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
        if self._store is not None and self._starts is None and self.nr_snapshots > 1:
            # decode only this snapshot's regions, not the whole record's
            n = self.nr_snapshots
            i = i + n if i < 0 else i
            if not 0 <= i < n:
                raise IndexError(f"snapshot {i} out of range")
            return self.slice(i, i + 1).snapshot(0)
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
            nr_samples=int(self.snap_nr_samples[i]),
            mean_window_us=int(self.snap_window_us[i]),
        )

    def slice(self, lo: int, hi: int) -> Record:
        """Snapshots ``lo:hi`` as a record sharing this one's columns (views, nothing decoded)."""
        n = self.nr_snapshots
        lo, hi = max(0, min(lo, n)), max(0, min(hi, n))
        hi = max(hi, lo)
        r0, r1 = int(self.region_offsets[lo]), int(self.region_offsets[hi])

        def cut(arr: np.ndarray | None) -> np.ndarray | None:
            return None if arr is None else arr[r0:r1]

        return Record(
            meta=self.meta, targets=self.targets,
            snap_target=self.snap_target[lo:hi],
            snap_start_us=self.snap_start_us[lo:hi], snap_end_us=self.snap_end_us[lo:hi],
            snap_sample_us=self.snap_sample_us[lo:hi], snap_aggr_us=self.snap_aggr_us[lo:hi],
            rss_bytes=self.rss_bytes[lo:hi], vsz_bytes=self.vsz_bytes[lo:hi],
            sys_free_bytes=self.sys_free_bytes[lo:hi],
            sys_total_bytes=self.sys_total_bytes[lo:hi],
            region_offsets=self.region_offsets[lo : hi + 1] - r0,
            starts=cut(self._starts), ends=cut(self._ends),
            nr_accesses=cut(self._nr_accesses), age=cut(self._age),
            complete=self.complete, source_format=self.source_format, warnings=self.warnings,
            store=self._store, store_snapshot=self._store_snapshot + lo,
            store_region=self._store_region + r0,
            snap_nr_samples=self.snap_nr_samples[lo:hi], snap_window_us=self.snap_window_us[lo:hi],
        )  # fmt: skip

    def chunk_bounds(self, max_regions: int = 1 << 18) -> list[tuple[int, int]]:
        """Snapshot ranges of about ``max_regions`` regions (by the mean snapshot size), for
        passes that stay in the CPU caches and never widen every region at once."""
        n = self.nr_snapshots
        if not n:
            return []
        step = max(1, max_regions // max(int(self.nr_regions.mean()), 1))
        return [(lo, min(lo + step, n)) for lo in range(0, n, step)]

    def chunks(self, max_regions: int = 1 << 18) -> Iterator[Record]:
        """:meth:`slice` s of :meth:`chunk_bounds` in order."""
        for lo, hi in self.chunk_bounds(max_regions):
            yield self.slice(lo, hi)

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
        if len(idx) and int(idx[-1]) - int(idx[0]) + 1 == len(idx):
            # one run of snapshots (e.g. a single-target record): views, nothing copied
            return self.slice(int(idx[0]), int(idx[-1]) + 1)
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
            snap_nr_samples=self.snap_nr_samples[idx],
            snap_window_us=self.snap_window_us[idx],
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
            snap_nr_samples=col([s.nr_samples for s in snapshots]),
            snap_window_us=col([s.mean_window_us for s in snapshots]),
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
            snap_nr_samples=cat("snap_nr_samples"),
            snap_window_us=cat("snap_window_us"),
        )
