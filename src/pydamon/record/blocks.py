"""The snapshot block codec of pydamon's record format: ``BLK1`` payloads.

A block holds one or more snapshots as narrow integer columns (each in the smallest dtype that
holds its values, optionally zlib-compressed): per-snapshot times, intervals and footprints, and
per-region sizes, the non-zero gaps between regions, ``nr_accesses`` and ``age``. The file
around the blocks (header, chunks, reader, writer) is :mod:`pydamon.record.binfmt`; see
``docs/record-format.md``.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np

from pydamon.record.model import UNKNOWN, Record, RecordError, TargetInfo

_BLOCK = struct.Struct("<IQBBH")  # nr_snapshots, nr_regions, flags, nr_columns, reserved
_COLUMN = struct.Struct("<BBBBI")  # column id, dtype code, shift, codec, stored bytes

#: Column ids, in the order they are written.
COL_TARGET, COL_START, COL_DURATION, COL_SAMPLE, COL_AGGR = 0, 1, 2, 3, 4
COL_RSS, COL_VSZ, COL_SYS_FREE, COL_SYS_TOTAL, COL_NR_REGIONS = 5, 6, 7, 8, 9
COL_GAP_INDEX, COL_GAP_VALUE, COL_SIZE, COL_NR_ACCESSES, COL_AGE = 10, 11, 12, 13, 14
#: Version 2 only: start of region ``region_offsets[i]`` for each snapshot ``i`` (0 past the end).
COL_FIRST_START = 15
#: Optional per-snapshot columns (absent from older records: UNKNOWN): the samples each
#: aggregation really took and their measured mean access window.
COL_NR_SAMPLES, COL_WINDOW = 16, 17
OPTIONAL_SNAP = ((COL_NR_SAMPLES, "snap_nr_samples"), (COL_WINDOW, "snap_window_us"))
COLUMN_NAMES = (
    "target start_us duration_us sample_us aggr_us rss_bytes vsz_bytes sys_free_bytes "
    "sys_total_bytes nr_regions gap_index gap_value size nr_accesses age first_start "
    "nr_samples window_us"
).split()

DTYPES = ["|u1", "<u2", "<u4", "<u8", "|i1", "<i2", "<i4", "<i8"]
_CODEC_RAW, _CODEC_ZLIB = 0, 1


def narrow_code(lo: int, hi: int) -> str:
    """The smallest integer dtype that holds every value in ``lo..hi``."""
    if lo >= 0:
        for code in ("|u1", "<u2", "<u4"):
            if hi <= np.iinfo(code).max:
                return code
        return "<u8"
    for code in ("|i1", "<i2", "<i4"):
        info = np.iinfo(code)
        if info.min <= lo and hi <= info.max:
            return code
    return "<i8"


def _narrow(arr: np.ndarray) -> np.ndarray:
    """``arr`` in the smallest integer dtype that holds every value of it."""
    if arr.size == 0:
        return arr.astype("|u1")
    return arr.astype(narrow_code(int(arr.min()), int(arr.max())))


def _pack_column(col_id: int, arr: np.ndarray, shift: int, compress: int) -> bytes:
    arr = _narrow(arr)
    data = arr.tobytes()
    codec = _CODEC_RAW
    if compress and len(data) > 256:
        packed = zlib.compress(data, compress)
        if len(packed) < len(data) * 0.9:
            data, codec = packed, _CODEC_ZLIB
    return _COLUMN.pack(col_id, DTYPES.index(arr.dtype.str), shift, codec, len(data)) + data


def encode_block(part: Record, compress: int = 0) -> bytes:
    """Encode the snapshots of ``part`` as one ``BLK1`` payload."""
    n, m = part.nr_snapshots, part.nr_regions_total
    starts = part.starts.astype(np.int64, copy=False)
    ends = part.ends.astype(np.int64, copy=False)
    sizes = ends - starts
    # Regions are mostly contiguous: keep only the non-zero gaps to the previous region's end.
    gaps = np.empty(m, np.int64)
    if m:
        gaps[0] = starts[0]
        gaps[1:] = starts[1:] - ends[:-1]
    gap_index = np.nonzero(gaps)[0]
    shift = 12 if m and not np.any(sizes & 4095) else 0
    columns = [
        (COL_TARGET, part.snap_target, 0),
        (COL_START, part.snap_start_us, 0),
        (COL_DURATION, part.snap_end_us - part.snap_start_us, 0),
        (COL_SAMPLE, part.snap_sample_us, 0),
        (COL_AGGR, part.snap_aggr_us, 0),
        (COL_RSS, part.rss_bytes, 0),
        (COL_VSZ, part.vsz_bytes, 0),
        (COL_SYS_FREE, part.sys_free_bytes, 0),
        (COL_SYS_TOTAL, part.sys_total_bytes, 0),
        (COL_NR_REGIONS, part.nr_regions, 0),
        (COL_GAP_INDEX, gap_index, 0),
        (COL_GAP_VALUE, gaps[gap_index], 0),
        (COL_SIZE, sizes >> shift, shift),
        (COL_NR_ACCESSES, part.nr_accesses, 0),
        (COL_AGE, part.age, 0),
        (COL_NR_SAMPLES, part.snap_nr_samples, 0),
        (COL_WINDOW, part.snap_window_us, 0),
    ]
    out = [_BLOCK.pack(n, m, 0, len(columns), 0)]
    out += [_pack_column(cid, np.asarray(arr), sh, compress) for cid, arr, sh in columns]
    return b"".join(out)


#: zlib cannot inflate more than this many bytes out of one (its format's limit is ~1032).
_ZLIB_MAX_RATIO = 1100
#: Sizes are stored shifted right by at most this many bits (pydamon writes 0 or 12).
_MAX_SHIFT = 48
_REGION_COLS = (COL_SIZE, COL_NR_ACCESSES, COL_AGE)


Columns = dict[int, tuple[np.ndarray, int]]


def _inflate(raw: memoryview, limit: int) -> bytes:
    """zlib data, refusing more than ``limit`` bytes out (a corrupted block's claim)."""
    d = zlib.decompressobj()
    out = d.decompress(raw, limit + 1)
    if len(out) > limit:
        raise RecordError("compressed column holds more than its block says")
    return out


def parse_block(payload: memoryview) -> tuple[int, int, Columns]:
    """The columns of a block as (narrow array, shift), zero-copy unless compressed, after
    checking every count and length against the payload (nothing is allocated from a claim
    the data cannot back) and the regions' columns against each other."""
    try:
        n, m, _flags, nr_columns, _ = _BLOCK.unpack_from(payload, 0)
        pos = _BLOCK.size
        cols: Columns = {}
        for _ in range(nr_columns):
            col_id, dtype_code, shift, codec, nbytes = _COLUMN.unpack_from(payload, pos)
            pos += _COLUMN.size
            raw = payload[pos : pos + nbytes]
            if len(raw) != nbytes:
                raise RecordError("column runs past its block")
            if dtype_code >= len(DTYPES) or codec not in (_CODEC_RAW, _CODEC_ZLIB):
                raise RecordError("column of an unknown type")
            if shift > _MAX_SHIFT:
                raise RecordError(f"column shifted by {shift} bits")
            pos += nbytes
            dtype = np.dtype(DTYPES[dtype_code])
            want = n if col_id < COL_GAP_INDEX or col_id >= COL_FIRST_START else m
            if want * dtype.itemsize > max(nbytes, 64) * _ZLIB_MAX_RATIO:
                raise RecordError("block claims more values than its size allows")
            data: bytes | memoryview = raw
            if codec == _CODEC_ZLIB:
                data = _inflate(raw, want * dtype.itemsize)
            if len(data) % dtype.itemsize:
                raise RecordError("column length is not a whole number of values")
            cols[col_id] = (np.frombuffer(data, dtype=dtype), shift)
    except struct.error:
        raise RecordError("bad snapshot block (short header or column)") from None
    except zlib.error as err:
        raise RecordError(f"bad snapshot block ({err})") from None
    if any(c not in cols for c in range(COL_AGE + 1)):
        raise RecordError("snapshot block lacks a column")
    nr_regions = cols[COL_NR_REGIONS][0]
    if not (
        all(len(cols[c][0]) == n for c in range(COL_NR_REGIONS + 1))
        and all(len(cols[c][0]) == m for c in _REGION_COLS)
        and len(cols[COL_GAP_INDEX][0]) == len(cols[COL_GAP_VALUE][0]) <= m
        and not (nr_regions.dtype.kind == "i" and n and int(nr_regions.min()) < 0)
        and int(nr_regions.sum(dtype=np.int64)) == m
        and all(len(cols[c][0]) == n for c, _ in OPTIONAL_SNAP if c in cols)
    ):
        raise RecordError("snapshot block columns disagree in length")
    gap_index = cols[COL_GAP_INDEX][0]
    if len(gap_index) and (int(gap_index.min()) < 0 or int(gap_index.max()) >= m):
        raise RecordError("snapshot block gap index out of range")
    return int(n), int(m), cols


_SNAP_COLUMNS = (
    (COL_TARGET, "snap_target"),
    (COL_START, "snap_start_us"),
    (COL_SAMPLE, "snap_sample_us"),
    (COL_AGGR, "snap_aggr_us"),
    (COL_RSS, "rss_bytes"),
    (COL_VSZ, "vsz_bytes"),
    (COL_SYS_FREE, "sys_free_bytes"),
    (COL_SYS_TOTAL, "sys_total_bytes"),
)


def empty_record(
    n: int, m: int, meta: dict[str, Any], targets: list[TargetInfo], small: bool = False
) -> Record:
    """Uninitialized columns; ``small``: nr_accesses and age fit int32 (less memory to fill)."""

    def e(k: int) -> np.ndarray:
        return np.empty(k, np.int64)

    def counts(k: int) -> np.ndarray:
        return np.empty(k, np.int32 if small else np.int64)

    return Record(
        meta=meta, targets=targets, snap_target=np.empty(n, np.int32),
        snap_start_us=e(n), snap_end_us=e(n), snap_sample_us=e(n), snap_aggr_us=e(n),
        rss_bytes=e(n), vsz_bytes=e(n), sys_free_bytes=e(n), sys_total_bytes=e(n),
        region_offsets=np.zeros(n + 1, np.int64),
        starts=e(m), ends=e(m), nr_accesses=counts(m), age=counts(m),
    )  # fmt: skip


def decode_into(block: tuple[int, int, Columns], out: Record, n0: int, m0: int) -> tuple[int, int]:
    """Decode one :func:`parse_block` d block into ``out``'s arrays at snapshot ``n0``/region
    ``m0``; a few passes over the regions, no intermediate arrays of the block's size."""
    n, m, cols = block
    n1, m1 = n0 + n, m0 + m
    for col_id, name in _SNAP_COLUMNS:
        getattr(out, name)[n0:n1] = cols[col_id][0]
    for col_id, name in OPTIONAL_SNAP:
        getattr(out, name)[n0:n1] = cols[col_id][0] if col_id in cols else UNKNOWN
    out.snap_end_us[n0:n1] = out.snap_start_us[n0:n1]
    out.snap_end_us[n0:n1] += cols[COL_DURATION][0].astype(np.int64)
    np.cumsum(cols[COL_NR_REGIONS][0], out=out.region_offsets[n0 + 1 : n1 + 1])
    out.region_offsets[n0 + 1 : n1 + 1] += m0
    starts, ends = out.starts[m0:m1], out.ends[m0:m1]
    sizes, shift = cols[COL_SIZE]
    ends[:] = sizes  # ends holds the sizes until the starts are known
    if shift:
        ends <<= shift
    if m:
        # starts[i] = starts[i-1] + size[i-1] + gap[i]: one cumulative sum
        starts[0] = 0
        starts[1:] = ends[:-1]
        gap_index = cols[COL_GAP_INDEX][0].astype(np.int64)
        starts[gap_index] += cols[COL_GAP_VALUE][0].astype(np.int64)
        np.cumsum(starts, out=starts)
        ends += starts
    out.nr_accesses[m0:m1] = cols[COL_NR_ACCESSES][0]
    out.age[m0:m1] = cols[COL_AGE][0]
    return n1, m1


def counts_fit_int32(cols: Columns) -> bool:
    """Whether a parsed block's nr_accesses and age columns are stored in at most 16 bits."""
    small = ("|u1", "<u2", "|i1", "<i2", "<i4")
    return all(cols[c][0].dtype.str in small for c in (COL_NR_ACCESSES, COL_AGE))


def decode_block(payload: memoryview, meta: dict[str, Any], targets: list[TargetInfo]) -> Record:
    block = parse_block(payload)
    out = empty_record(block[0], block[1], meta, targets)
    decode_into(block, out, 0, 0)
    return out
