"""pydamon's record format: round trips, streaming, torn tails, corruption, odd values."""

from __future__ import annotations

import os

import numpy as np
import pytest

from pydamon.core.snapshot import Snapshot
from pydamon.record import (
    Footprint,
    Record,
    RecordError,
    RecordWriter,
    read_record,
    write_record,
)

COLUMNS = (
    "snap_target snap_start_us snap_end_us snap_sample_us snap_aggr_us rss_bytes vsz_bytes "
    "sys_free_bytes sys_total_bytes region_offsets starts ends nr_accesses age"
).split()


def make_snapshots(n: int = 30, nr_targets: int = 2, seed: int = 0) -> list[Snapshot]:
    rng = np.random.default_rng(seed)
    snaps = []
    for i in range(n):
        t = i % nr_targets
        nr = int(rng.integers(3, 40))
        bounds = np.sort(rng.choice(np.arange(1, 5000), nr - 1, replace=False)) * 4096
        base = 0x7F0000000000 if t else 0x555555554000
        starts = np.concatenate([[0], bounds]) + base
        ends = np.concatenate([bounds, [5000 * 4096]]) + base
        if nr > 4:
            ends[2] -= 4096  # a hole between regions
        snaps.append(
            Snapshot(
                t, 100 + t, i * 100_000, (i + 1) * 100_000, 5000, 100_000,
                starts.astype(np.int64), ends.astype(np.int64),
                rng.integers(0, 21, nr), rng.integers(0, 1000, nr),
            )
        )  # fmt: skip
    return snaps


def make_record(n: int = 30) -> Record:
    snaps = make_snapshots(n)
    fps = [Footprint(i * 4096, 2 * i * 4096, 10**9 - i, 2 * 10**9) for i in range(n)]
    return Record.from_snapshots(snaps, footprints=fps)


def assert_same(a: Record, b: Record) -> None:
    for name in COLUMNS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def stream(path: str, rec: Record, close: bool = True) -> RecordWriter:
    w = RecordWriter(path, {"targets": [{"index": 0, "pid": 100}, {"index": 1, "pid": 101}]})
    for i in range(rec.nr_snapshots):
        w.add(rec.select(np.arange(rec.nr_snapshots) == i))
    if close:
        w.close({"why": "test"})
    return w


def test_streamed_then_finalized_round_trip(tmp_path):
    rec = make_record()
    path = str(tmp_path / "r.data")
    w = stream(path, rec, close=False)
    live = read_record(path)  # readable while being written
    assert not live.complete and live.nr_snapshots == rec.nr_snapshots
    assert_same(live, rec)
    w.close()
    done = read_record(path)
    assert done.complete and not done.warnings
    assert_same(done, rec)
    assert done.targets[1].pid == 101
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]
    snap = done.snapshot(3)
    assert snap.target_id == 101 and snap.nr_regions == int(rec.nr_regions[3])


def test_torn_tail_reads_up_to_last_complete_snapshot(tmp_path):
    rec = make_record(10)
    path = str(tmp_path / "r.data")
    stream(path, rec, close=False).close(consolidate=False)
    data = open(path, "rb").read()
    # find where the last snapshot chunk starts by streaming one less
    stream(str(tmp_path / "p.data"), rec.select(np.arange(10) < 9), close=False)
    nine = os.path.getsize(tmp_path / "p.data")
    for cut in (nine + 1, nine + 7, nine + 12, nine + 40, len(data) - 20):
        torn = tmp_path / f"t{cut}.data"
        torn.write_bytes(data[:cut])
        got = read_record(str(torn))
        assert got.nr_snapshots == 9 and not got.complete, cut
        assert got.warnings and "torn tail" in got.warnings[0]
        assert_same(got, rec.select(np.arange(10) < 9))


def test_corrupted_middle_chunk_is_skipped(tmp_path):
    rec = make_record(10)
    path = tmp_path / "r.data"
    stream(str(path), rec, close=False).close(consolidate=False)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    got = read_record(str(path))
    assert got.nr_snapshots == 9 and len(got.damage) == 1
    assert got.damage[0].first_byte <= len(data) // 2 < got.damage[0].end_byte
    lost = got.damage[0].after_snapshot
    assert_same(got, rec.select(np.arange(10) != lost))


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", "empty"),
        (b"hello world, not a record", "unknown record format"),
        (b"PYDAMREC\x01", "bad magic"),
        (b"PYDAMREC\x09\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00{}", "newer"),
        (b"PYDAMREC\x01\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00{", "truncated"),
    ],
)
def test_bad_files(tmp_path, content, words):
    path = tmp_path / "bad.data"
    path.write_bytes(content)
    with pytest.raises(RecordError) as err:
        read_record(str(path))
    assert words in str(err.value)
    with pytest.raises(RecordError, match="no such record file"):
        read_record(str(tmp_path / "missing"))


def test_wide_values_and_compression(tmp_path):
    # values that do not fit the narrow dtypes: huge ages/accesses, unaligned sizes
    starts = np.array([0x1001, 0x3000, 2**47], np.int64)
    ends = np.array([0x2000, 0x3000 + 2**33, 2**47 + 3], np.int64)
    snap = Snapshot(0, None, 0, 10, 1, 2**20, starts, ends,
                    np.array([0, 2**20, 7]), np.array([2**31, 0, 70000]))  # fmt: skip
    rec = Record.from_snapshots([snap] * 3000)
    for level in (0, 6):
        path = str(tmp_path / f"w{level}.data")
        write_record(path, rec, compress=level)
        assert_same(read_record(path), rec)
    assert os.path.getsize(tmp_path / "w6.data") < os.path.getsize(tmp_path / "w0.data") / 2


def test_compact_size_per_region(tmp_path):
    rec = Record.from_snapshots(make_snapshots(400, nr_targets=1))
    path = str(tmp_path / "r.data")
    write_record(path, rec)
    per_region = os.path.getsize(path) / rec.nr_regions_total
    assert per_region < 12, per_region  # 8 B start + 8 B end + 16 B counts in memory


def test_record_from_snapshots_round_trips():
    """What a program collects (the demo, a live monitor) becomes a record and back, unchanged:
    two targets, snapshots of different sizes, one without regions."""
    snaps = make_snapshots(9)
    empty = np.zeros(0, np.int64)
    snaps.insert(4, Snapshot(1, 101, 350_000, 450_000, 5000, 100_000, empty, empty, empty, empty))
    fps = [Footprint(i, 2 * i, 3 * i, 4 * i) for i in range(len(snaps))]
    rec = Record.from_snapshots(snaps, footprints=fps)
    assert rec.nr_snapshots == len(snaps) and rec.target_indexes() == [0, 1]
    assert [(t.index, t.target_id) for t in rec.targets] == [(0, 100), (1, 101)]
    back = list(rec.snapshots())
    for a, b in zip(back, snaps, strict=True):
        assert a.to_dict() == b.to_dict()
    assert [rec.footprint(i) for i in range(rec.nr_snapshots)] == fps
    assert [s.to_dict() for s in rec.snapshots(target_index=1)] == [
        s.to_dict() for s in snaps if s.target_index == 1
    ]


def test_block_codec_round_trips_alone():
    from pydamon.record.blocks import decode_block, encode_block

    rec = make_record(12)
    for compress in (0, 6):
        payload = encode_block(rec, compress)
        got = decode_block(memoryview(payload), rec.meta, rec.targets)
        assert_same(got, rec)
    with pytest.raises(RecordError, match="short header"):
        decode_block(memoryview(b"\0" * 5), {}, [])
