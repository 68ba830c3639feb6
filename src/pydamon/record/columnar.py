"""Version 2 of pydamon's record format: finalized records as whole-record columns.

A finalized (uncompressed) record holds one ``COL2`` chunk per column, each column's values for
every snapshot stored contiguously at a 64-byte aligned file offset in the narrowest integer type
that holds them. Reading maps the file and wraps the columns in numpy views: nothing is copied
or widened at load. The per-region columns become int64 only for the snapshot ranges a report
asks for (:class:`ColumnStore`, behind :class:`pydamon.record.model.Record`). Each column carries
a CRC-32 per 4 MiB segment, checked the first time a segment is used, so a damaged file still
fails with a one-line :class:`RecordError` naming the column and byte offset, while a report that
needs two of the columns only checksums those two. See ``docs/record-format.md``.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from pydamon.record import binfmt as bf
from pydamon.record import blocks as blk
from pydamon.record.model import CorruptColumn, Record, RecordError, TargetInfo

COLUMN_DESC = struct.Struct("<BBBBQII")  # id, dtype, shift, reserved, count, seg bytes, data off
#: Version 2 columns carry one CRC-32 per this many bytes of data, checked on first use: damage
#: costs the snapshots of one segment (~50 snapshots of 1300 one-byte sizes), the CRCs 0.006%.
SEGMENT_BYTES = 1 << 16
#: Column data starts at file offsets that are a multiple of this (aligned numpy views).
COLUMN_ALIGN = 64
#: A column chunk's payload length is a u32: bigger records are finalized as blocks (version 1).
MAX_COLUMN_PAYLOAD = 0xFFFF_0000

#: Per-snapshot columns, in file order, with the Record attribute they fill.
SNAP_COLUMNS = (
    (blk.COL_TARGET, "snap_target"),
    (blk.COL_START, "snap_start_us"),
    (blk.COL_DURATION, ""),
    (blk.COL_SAMPLE, "snap_sample_us"),
    (blk.COL_AGGR, "snap_aggr_us"),
    (blk.COL_RSS, "rss_bytes"),
    (blk.COL_VSZ, "vsz_bytes"),
    (blk.COL_SYS_FREE, "sys_free_bytes"),
    (blk.COL_SYS_TOTAL, "sys_total_bytes"),
    (blk.COL_NR_REGIONS, ""),
    (blk.COL_FIRST_START, ""),
)
REGION_COLUMNS = (
    blk.COL_GAP_INDEX, blk.COL_GAP_VALUE, blk.COL_SIZE, blk.COL_NR_ACCESSES, blk.COL_AGE
)  # fmt: skip
#: Per-snapshot columns older records lack (read as UNKNOWN): real sample counts, windows.
OPTIONAL_SNAP_COLUMNS = blk.OPTIONAL_SNAP
#: The columns a record cannot be read without.
REQUIRED_COLUMNS = tuple(c for c, _ in SNAP_COLUMNS) + REGION_COLUMNS
#: The columns written, in file order (the per-snapshot ones first: a torn file loses regions).
ALL_COLUMNS = tuple(c for c, _ in SNAP_COLUMNS + OPTIONAL_SNAP_COLUMNS) + REGION_COLUMNS


# -- reading ---------------------------------------------------------------------------------------
def descriptor_length(payload: memoryview) -> int:
    """Bytes of a ``COL2`` payload covered by the chunk's CRC (descriptor and padding)."""
    try:
        fields = COLUMN_DESC.unpack_from(payload, 0)
    except Exception:
        return len(payload)  # too short: the chunk CRC then covers it all (and fails)
    data_offset = int(fields[6])
    return min(max(data_offset, COLUMN_DESC.size), len(payload))


class MappedColumn:
    """One column of a mapped file: a numpy view plus lazily checked segment CRCs."""

    def __init__(self, path: str, payload: memoryview, payload_pos: int) -> None:
        self.path = path
        col_id, dtype_code, shift, _res, count, seg, data_off = COLUMN_DESC.unpack_from(payload, 0)
        if (
            dtype_code >= len(blk.DTYPES)
            or col_id >= len(blk.COLUMN_NAMES)
            or seg <= 0
            or seg % 8
            or shift > 48
        ):
            raise RecordError(f"{path}: bad column chunk at byte {payload_pos - bf.CHUNK.size}")
        self.col_id = int(col_id)
        self.name = blk.COLUMN_NAMES[col_id]
        self.shift = int(shift)
        self.dtype = np.dtype(blk.DTYPES[dtype_code])
        self.count = int(count)
        self.segment_bytes = int(seg)
        nbytes = self.count * self.dtype.itemsize
        nsegs = -(-nbytes // self.segment_bytes)
        crc_end = COLUMN_DESC.size + 4 * nsegs
        if crc_end > data_off or data_off + nbytes > len(payload):
            raise RecordError(
                f"{path}: column {self.name} runs past its chunk at byte "
                f"{payload_pos - bf.CHUNK.size}; the record is damaged"
            )
        self.crcs = np.frombuffer(payload, "<u4", nsegs, COLUMN_DESC.size)
        self.raw = payload[data_off : data_off + nbytes]
        self.data_pos = payload_pos + data_off
        self.array: np.ndarray = np.frombuffer(self.raw, self.dtype, self.count)
        self._checked = np.zeros(nsegs, bool)
        #: Verified gap columns: which values to use (the damaged ones left out), or None.
        self.keep: np.ndarray | None = None

    def get(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """Values ``lo:hi`` (a view of the file), their segments checksummed first."""
        hi = self.count if hi is None else hi
        if hi > lo:
            isz = self.dtype.itemsize
            first, last = lo * isz // self.segment_bytes, (hi * isz - 1) // self.segment_bytes
            if not self._checked[first : last + 1].all():
                self._check(first, last)
        return self.array[lo:hi]

    def _check(self, first: int, last: int) -> None:
        seg = self.segment_bytes
        for k in range(first, last + 1):
            if self._checked[k]:
                continue
            if not self._segment_ok(k):
                raise CorruptColumn(
                    f"{self.path}: corrupted {self.name} column at byte "
                    f"{self.data_pos + k * seg} (checksum mismatch); the file was damaged after "
                    "it was written"
                )
            self._checked[k] = True

    def _segment_ok(self, k: int) -> bool:
        seg = self.segment_bytes
        return zlib.crc32(self.raw[k * seg : (k + 1) * seg]) == int(self.crcs[k])

    def bad_values(self) -> list[tuple[int, int, int]]:
        """Check every segment now: (first value, end value, file byte) of each damaged one."""
        out = []
        seg, isz = self.segment_bytes, self.dtype.itemsize
        for k in range(len(self._checked)):
            if self._checked[k]:
                continue
            if self._segment_ok(k):
                self._checked[k] = True
            else:
                lo, hi = k * seg // isz, min(self.count, -(-(k + 1) * seg // isz))
                out.append((lo, hi, self.data_pos + k * seg))
        return out


class ColumnStore:
    """The per-region columns of a version 2 record (:class:`pydamon.record.model.RegionStore`)."""

    def __init__(
        self, path: str, cols: dict[int, MappedColumn], offsets: np.ndarray, first: np.ndarray
    ) -> None:
        self.path = path
        self.offsets = offsets
        # a range may begin with snapshots without regions: give those the first start of the
        # next snapshot that has regions (where the range's first region is)
        n = len(first)
        nonempty = np.diff(offsets) > 0
        nxt = np.where(nonempty, np.arange(n), n)
        nxt = np.minimum.accumulate(nxt[::-1])[::-1] if n else nxt
        self.first_start = np.where(nxt < n, first[np.minimum(nxt, max(n - 1, 0))], 0)
        self.size = cols[blk.COL_SIZE]
        self.shift = self.size.shift
        self.nr_accesses = cols[blk.COL_NR_ACCESSES]
        self.age = cols[blk.COL_AGE]
        self._gap_cols = (cols[blk.COL_GAP_INDEX], cols[blk.COL_GAP_VALUE])
        self._gaps: tuple[np.ndarray, np.ndarray] | None = None
        m = int(offsets[-1])
        for c in (self.size, self.nr_accesses, self.age):
            if c.count != m:
                raise RecordError(f"{path}: column {c.name} has {c.count} values, not {m}")

    def gaps(self) -> tuple[np.ndarray, np.ndarray]:
        """(positions, start - previous end) of the regions that do not touch their predecessor."""
        if self._gaps is None:
            gi, gv = self._gap_cols
            if gi.count != gv.count:
                raise RecordError(f"{self.path}: gap columns disagree in length")
            keep = gi.keep
            if keep is None:
                idx, val = gi.get().astype(np.int64), gv.get().astype(np.int64)
            else:  # verified: the damaged entries left out (their snapshots are not read)
                idx, val = gi.array[keep].astype(np.int64), gv.array[keep].astype(np.int64)
            m = int(self.offsets[-1])
            if len(idx) and (idx[0] < 1 or idx[-1] >= m or np.any(np.diff(idx) <= 0)):
                raise RecordError(f"{self.path}: gap_index column is not increasing in 1..{m}")
            self._gaps = (idx, val)
        return self._gaps

    def starts_ends(self, snap_lo: int, snap_hi: int) -> tuple[np.ndarray, np.ndarray]:
        r0, r1 = int(self.offsets[snap_lo]), int(self.offsets[snap_hi])
        ends = self.sizes(r0, r1)
        starts = np.empty(r1 - r0, np.int64)
        if r1 == r0:
            return starts, ends
        # start[i] = start[i-1] + size[i-1] + gap[i]: one cumulative sum from the snapshot's start
        starts[0] = self.first_start[snap_lo]
        starts[1:] = ends[:-1]
        gi, gv = self.gaps()
        a, b = np.searchsorted(gi, [r0 + 1, r1])
        if b > a:
            starts[gi[a:b] - r0] += gv[a:b]
        np.cumsum(starts, out=starts)
        ends += starts
        return starts, ends

    def runs(self, snap_lo: int, snap_hi: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(starts, ends) of the runs of touching regions of each snapshot in the range, from
        the sizes and gaps alone (no per-region positions); None if some snapshot's regions are
        not in address order (a negative gap) or sizes are signed."""
        if self.size.dtype.kind != "u":
            return None
        r0, r1 = int(self.offsets[snap_lo]), int(self.offsets[snap_hi])
        if r1 == r0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        gi, gv = self.gaps()
        a, b = np.searchsorted(gi, [r0 + 1, r1])
        gi, gv = gi[a:b], gv[a:b]
        offs = self.offsets[snap_lo:snap_hi]
        firsts = offs[np.diff(self.offsets[snap_lo : snap_hi + 1]) > 0]
        is_first = np.isin(gi, firsts)
        if np.any(gv[~is_first] < 0):
            return None
        at = np.union1d(firsts, gi)  # where runs start: each snapshot's first region, each gap
        lengths = np.empty(len(at), np.int64)
        # summed in groups of runs of ~1 M regions: reduceat casts its input to int64 first
        cuts = np.searchsorted(at, np.arange(r0, r1, 1 << 20))
        cuts = np.unique(np.append(cuts[cuts < len(at)], len(at)))
        for j0, j1 in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
            lo = int(at[j0])
            hi = int(at[j1]) if j1 < len(at) else r1
            lengths[j0:j1] = np.add.reduceat(self.size.get(lo, hi), at[j0:j1] - lo, dtype=np.int64)
        lengths <<= self.shift
        # start of a run = end of the previous run + its gap; the range's first start is known
        steps = np.zeros(len(at), np.int64)
        steps[np.searchsorted(at, gi)] = gv
        steps[1:] += lengths[:-1]
        steps[0] = self.first_start[snap_lo]
        starts = np.cumsum(steps)
        return starts, starts + lengths

    def sizes(self, lo: int, hi: int) -> np.ndarray:
        out = self.size.get(lo, hi).astype(np.int64)
        if self.shift:
            out <<= self.shift
        return out

    def size_units(self, lo: int, hi: int) -> tuple[np.ndarray, int]:
        return self.size.get(lo, hi), self.shift

    def counts(self, name: str, lo: int, hi: int) -> np.ndarray:
        col = self.nr_accesses if name == "nr_accesses" else self.age
        return col.get(lo, hi)


def read_columns(
    path: str,
    chunks: Iterable[tuple[int, memoryview]],
    meta: dict[str, Any],
    targets: list[TargetInfo],
    *,
    verify: bool = False,
    damaged: list[tuple[int, int, int]] | None = None,
) -> Record:
    """A store-backed :class:`Record` from the ``COL2`` chunks (payload offset, payload).

    ``damaged``: byte ranges the reader skipped (named if a column is lost there).
    ``verify``: check every segment now; the snapshots whose values lie in a damaged segment
    are left out (listed in ``Record.damage``) and the rest is decoded into memory."""
    cols: dict[int, MappedColumn] = {}
    for pos, payload in chunks:
        col = MappedColumn(path, payload, pos)
        cols[col.col_id] = col
    missing = [blk.COLUMN_NAMES[c] for c in REQUIRED_COLUMNS if c not in cols]
    if missing and damaged:
        a, b, _ = damaged[0]
        raise RecordError(
            f"{path}: corrupted chunk at byte {a} (checksum mismatch, bytes {a}-{b}) held column "
            f"{missing[0]}: the snapshots cannot be rebuilt without it"
        )
    if missing:
        raise RecordError(
            f"{path}: record is truncated or damaged (column {missing[0]} missing or "
            "unreadable); the snapshots cannot be rebuilt without it"
        )
    n = cols[blk.COL_START].count
    optional = [(c, name) for c, name in OPTIONAL_SNAP_COLUMNS if c in cols]
    if any(cols[c].count != n for c, _ in SNAP_COLUMNS + tuple(optional)):
        raise RecordError(f"{path}: per-snapshot columns disagree in length")
    if verify:
        from pydamon.record.salvage import damaged_snapshots

        bad = damaged_snapshots(path, cols)

    def snap(col_id: int) -> np.ndarray:
        col = cols[col_id]
        return (col.array if verify else col.get()).astype(np.int64)

    counts = snap(blk.COL_NR_REGIONS)
    if n and int(counts.min()) < 0:
        raise RecordError(f"{path}: nr_regions column holds a negative count")
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    start = snap(blk.COL_START)
    store = ColumnStore(path, cols, offsets, snap(blk.COL_FIRST_START))
    rec = Record(
        meta=meta, targets=targets,
        snap_target=(cols[blk.COL_TARGET].array if verify else cols[blk.COL_TARGET].get()
                     ).astype(np.int32),
        snap_start_us=start, snap_end_us=start + snap(blk.COL_DURATION),
        snap_sample_us=snap(blk.COL_SAMPLE), snap_aggr_us=snap(blk.COL_AGGR),
        rss_bytes=snap(blk.COL_RSS), vsz_bytes=snap(blk.COL_VSZ),
        sys_free_bytes=snap(blk.COL_SYS_FREE), sys_total_bytes=snap(blk.COL_SYS_TOTAL),
        region_offsets=offsets, store=store,
    )  # fmt: skip
    for c, name in optional:
        setattr(rec, name, snap(c))
    if not verify or not bad[0].any():
        return rec
    from pydamon.record.salvage import without

    return without(rec, *bad)


# -- writing ---------------------------------------------------------------------------------------
@dataclass
class _Plan:
    """What pass 1 learned: column dtypes and counts, and the small per-snapshot columns."""

    snap: dict[int, np.ndarray]
    nr_regions_total: int
    nr_gaps: int
    size_shift: int
    codes: dict[int, str]


class _Range:
    def __init__(self) -> None:
        self.lo: int | None = None
        self.hi: int | None = None

    def add(self, arr: np.ndarray) -> None:
        if len(arr):
            lo, hi = int(arr.min()), int(arr.max())
            self.lo = lo if self.lo is None else min(self.lo, lo)
            self.hi = hi if self.hi is None else max(self.hi, hi)

    def code(self) -> str:
        return blk.narrow_code(self.lo or 0, self.hi or 0)


def _gaps_of(part: Record, prev_end: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Positions (within ``part``) and values of non-zero gaps to the previous region's end;
    position 0 counts only after an earlier part (``prev_end`` given)."""
    starts, ends = part.starts, part.ends
    gaps = np.empty(len(starts), np.int64)
    if not len(starts):
        return np.zeros(0, np.int64), gaps
    gaps[0] = 0 if prev_end is None else int(starts[0]) - prev_end
    gaps[1:] = starts[1:] - ends[:-1]
    idx = np.nonzero(gaps)[0]
    return idx, gaps[idx]


def _plan(parts: Iterator[Record]) -> _Plan:
    snap_lists: dict[int, list[np.ndarray]] = {
        c: [] for c, _ in SNAP_COLUMNS + OPTIONAL_SNAP_COLUMNS
    }
    counted = (blk.COL_SIZE, blk.COL_NR_ACCESSES, blk.COL_AGE, blk.COL_GAP_VALUE)
    ranges = {c: _Range() for c in counted}
    m = nr_gaps = 0
    aligned = True
    prev_end: int | None = None
    for part in parts:
        for col_id, arr in _snapshot_values(part).items():
            snap_lists[col_id].append(arr)
        if not part.nr_regions_total:
            continue
        sizes = part.ends - part.starts
        aligned = aligned and not np.any(sizes & 4095)
        ranges[blk.COL_SIZE].add(sizes)
        ranges[blk.COL_NR_ACCESSES].add(part.nr_accesses)
        ranges[blk.COL_AGE].add(part.age)
        _idx, val = _gaps_of(part, prev_end)
        ranges[blk.COL_GAP_VALUE].add(val)
        nr_gaps += len(val)
        m += part.nr_regions_total
        prev_end = int(part.ends[-1])
    snap = {c: np.concatenate(v) if v else np.zeros(0, np.int64) for c, v in snap_lists.items()}
    shift = 12 if m and aligned else 0
    sr = ranges[blk.COL_SIZE]
    codes = {
        blk.COL_SIZE: blk.narrow_code((sr.lo or 0) >> shift, (sr.hi or 0) >> shift),
        blk.COL_NR_ACCESSES: ranges[blk.COL_NR_ACCESSES].code(),
        blk.COL_AGE: ranges[blk.COL_AGE].code(),
        blk.COL_GAP_VALUE: ranges[blk.COL_GAP_VALUE].code(),
        blk.COL_GAP_INDEX: blk.narrow_code(0, max(m - 1, 0)),
    }
    for col_id, arr in snap.items():
        codes[col_id] = blk.narrow_code(int(arr.min()), int(arr.max())) if len(arr) else "|u1"
    return _Plan(snap, m, nr_gaps, shift, codes)


def _snapshot_values(part: Record) -> dict[int, np.ndarray]:
    n = part.nr_snapshots
    first = np.zeros(n, np.int64)
    if part.nr_regions_total:
        has = part.nr_regions > 0
        first[has] = part.starts[part.region_offsets[:-1][has]]
    out = {
        blk.COL_DURATION: (part.snap_end_us - part.snap_start_us).astype(np.int64),
        blk.COL_NR_REGIONS: part.nr_regions.astype(np.int64),
        blk.COL_FIRST_START: first,
    }
    for col_id, name in SNAP_COLUMNS + OPTIONAL_SNAP_COLUMNS:
        if name:
            out[col_id] = np.asarray(getattr(part, name), np.int64)
    return out


class _ColumnOut:
    """Writes one column's data at its file offset, computing the segment CRCs on the way."""

    def __init__(self, fd: int, data_pos: int) -> None:
        self.fd, self.pos = fd, data_pos
        self.crcs: list[int] = []
        self._crc = 0
        self._in_seg = 0

    def write(self, arr: np.ndarray) -> None:
        mv = np.ascontiguousarray(arr).data.cast("B")
        done = 0
        while done < len(mv):
            done += os.pwrite(self.fd, mv[done:], self.pos + done)
        self.pos += len(mv)
        i = 0
        while i < len(mv):
            take = min(SEGMENT_BYTES - self._in_seg, len(mv) - i)
            self._crc = zlib.crc32(mv[i : i + take], self._crc)
            self._in_seg += take
            i += take
            if self._in_seg == SEGMENT_BYTES:
                self.crcs.append(self._crc)
                self._crc, self._in_seg = 0, 0

    def finish(self) -> list[int]:
        if self._in_seg:
            self.crcs.append(self._crc)
            self._crc, self._in_seg = 0, 0
        return self.crcs


def write_columns(
    fd: int,
    meta: dict[str, Any],
    parts: Callable[[], Iterator[Record]],
    trailer: Callable[[int], list[bytes]],
) -> int | None:
    """Write a version 2 record to ``fd`` (an empty file): header, one ``COL2`` chunk per
    column, then the ``trailer(nr_snapshots)`` chunks (events, footer). ``parts`` is called
    twice (one pass to size the columns, one to write them). Returns the number of snapshots,
    or None (nothing written) if a column would exceed a chunk's 4 GiB limit: write blocks
    instead."""
    plan = _plan(parts())
    n, m = len(plan.snap[blk.COL_START]), plan.nr_regions_total
    counts = {c: n for c, _ in SNAP_COLUMNS + OPTIONAL_SNAP_COLUMNS}
    counts.update({blk.COL_GAP_INDEX: plan.nr_gaps, blk.COL_GAP_VALUE: plan.nr_gaps})
    counts.update({blk.COL_SIZE: m, blk.COL_NR_ACCESSES: m, blk.COL_AGE: m})
    header = bf.header_bytes(meta, bf.VERSION_COLUMNS)
    layout: dict[int, tuple[int, int, int]] = {}  # column -> chunk pos, data offset, nbytes
    pos = len(header)
    for col_id in ALL_COLUMNS:
        nbytes = counts[col_id] * np.dtype(plan.codes[col_id]).itemsize
        desc = COLUMN_DESC.size + 4 * (-(-nbytes // SEGMENT_BYTES))
        payload_pos = pos + bf.CHUNK.size
        data_pos = -(-(payload_pos + desc) // COLUMN_ALIGN) * COLUMN_ALIGN
        if data_pos - payload_pos + nbytes > MAX_COLUMN_PAYLOAD:
            return None
        layout[col_id] = (pos, data_pos - payload_pos, nbytes)
        pos = data_pos + nbytes
    os.pwrite(fd, header, 0)
    outs = {c: _ColumnOut(fd, layout[c][0] + bf.CHUNK.size + layout[c][1]) for c in ALL_COLUMNS}
    for col_id, arr in plan.snap.items():
        outs[col_id].write(arr.astype(plan.codes[col_id]))
    m0 = 0
    prev_end: int | None = None
    shift = plan.size_shift
    for part in parts():
        if not part.nr_regions_total:
            continue
        idx, val = _gaps_of(part, prev_end)
        outs[blk.COL_GAP_INDEX].write((idx + m0).astype(plan.codes[blk.COL_GAP_INDEX]))
        outs[blk.COL_GAP_VALUE].write(val.astype(plan.codes[blk.COL_GAP_VALUE]))
        sizes = part.ends - part.starts
        outs[blk.COL_SIZE].write((sizes >> shift).astype(plan.codes[blk.COL_SIZE]))
        outs[blk.COL_NR_ACCESSES].write(part.nr_accesses.astype(plan.codes[blk.COL_NR_ACCESSES]))
        outs[blk.COL_AGE].write(part.age.astype(plan.codes[blk.COL_AGE]))
        m0 += part.nr_regions_total
        prev_end = int(part.ends[-1])
    if m0 != m:
        raise RecordError("record changed while it was being finalized")
    for col_id in ALL_COLUMNS:
        chunk_pos, data_off, nbytes = layout[col_id]
        crcs = outs[col_id].finish()
        descriptor = (
            COLUMN_DESC.pack(
                col_id,
                blk.DTYPES.index(np.dtype(plan.codes[col_id]).str),
                shift if col_id == blk.COL_SIZE else 0,
                0,
                counts[col_id],
                SEGMENT_BYTES,
                data_off,
            )
            + np.asarray(crcs, "<u4").tobytes()
        )
        covered = descriptor + bytes(data_off - len(descriptor))
        head = bf.CHUNK.pack(bf.TAG_COLUMN, data_off + nbytes, zlib.crc32(covered))
        os.pwrite(fd, head + covered, chunk_pos)
    for chunk in trailer(n):
        os.pwrite(fd, chunk, pos)
        pos += len(chunk)
    return n


def slices_of(rec: Record, step: int = bf.FINAL_BLOCK_SNAPSHOTS) -> Iterator[Record]:
    for lo in range(0, rec.nr_snapshots, step):
        yield rec.slice(lo, lo + step)
