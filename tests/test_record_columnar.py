"""Format version 2 (whole-record columns, mapped and decoded per snapshot range) against the
version 1 block decoder: the same snapshots, the same report numbers, the same CLI output, and
honest errors for truncated or damaged files."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from pydamon import report
from pydamon.cli.main import main
from pydamon.core.snapshot import Snapshot
from pydamon.record import Footprint, Record, RecordError, RecordWriter, read_record, write_record
from pydamon.record.binfmt import MAGIC, RecordReader
from test_record_format import COLUMNS, make_record, make_snapshots, stream

K = 4096


def assert_same(a: Record, b: Record) -> None:
    assert a.nr_snapshots == b.nr_snapshots and a.nr_regions_total == b.nr_regions_total
    for name in COLUMNS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def version_of(path: str) -> int:
    with open(path, "rb") as f:
        head = f.read(len(MAGIC) + 2)
    return int(struct.unpack_from("<H", head, len(MAGIC))[0])


def with_empty_snapshots() -> Record:
    """Snapshots without regions here and there (first, middle, last), holes, unaligned sizes."""
    snaps = []
    rng = np.random.default_rng(3)
    for i in range(50):
        nr = 0 if i in (0, 7, 8, 49) else int(rng.integers(1, 30))
        starts = np.sort(rng.choice(np.arange(1, 10**6), nr, replace=False)) * 4099
        ends = starts + rng.integers(1, 4000, nr)
        snaps.append(
            Snapshot(0, 7, i * 1000, (i + 1) * 1000, 10, 1000, starts, ends,
                     rng.integers(0, 101, nr), rng.integers(0, 70000, nr))
        )  # fmt: skip
    return Record.from_snapshots(snaps)


def three_spans(n: int = 300, nr: int = 60) -> Record:
    """Like a process: heap, mmap area and stack, boundaries moving every snapshot."""
    rng = np.random.default_rng(5)
    snaps = []
    for i in range(n):
        starts_l, ends_l = [], []
        for base, pages, k in ((0x555555554000, 1 << 18, nr // 2), (0x7F0000000000, 1 << 20,
                               nr // 2 - 2), (0x7FFFFF000000, 2048, 2)):  # fmt: skip
            cuts = np.sort(rng.choice(np.arange(1, pages), k - 1, replace=False))
            starts_l.append(np.concatenate([[0], cuts]) * K + base)
            ends_l.append(np.concatenate([cuts, [pages]]) * K + base)
        starts, ends = np.concatenate(starts_l), np.concatenate(ends_l)
        hot = (starts >= 0x555555554000 + (i % 50) * (1 << 22)) & (starts < 0x555560000000)
        acc = np.where(hot, 18, rng.integers(0, 2, len(starts)))
        snaps.append(Snapshot(0, 1, i * 100_000, (i + 1) * 100_000, 5000, 100_000, starts, ends,
                              acc, rng.integers(0, 500, len(starts))))  # fmt: skip
    fps = [Footprint(i * K, 2 * i * K, 10**9 - i, 2 * 10**9) for i in range(n)]
    return Record.from_snapshots(snaps, footprints=fps)


RECORDS = {
    "two_targets": lambda: make_record(40),
    "empty_snapshots": with_empty_snapshots,
    "three_spans": three_spans,
}


@pytest.fixture(params=sorted(RECORDS))
def pair(request, tmp_path):
    """(in-memory record, version 1 file, version 2 file) of the same snapshots."""
    rec = RECORDS[request.param]()
    v1, v2 = str(tmp_path / "v1.data"), str(tmp_path / "v2.data")
    write_record(v1, rec, layout="blocks")
    write_record(v2, rec)
    assert version_of(v1) == 1 and version_of(v2) == 2
    return rec, v1, v2


def test_same_columns_and_snapshots(pair):
    rec, v1, v2 = pair
    old, new = read_record(v1), read_record(v2)
    assert new.is_lazy and not old.is_lazy and new.complete
    assert_same(old, rec)
    assert_same(new, rec)
    for i in (0, 1, rec.nr_snapshots // 2, rec.nr_snapshots - 1):
        a, b = read_record(v1).snapshot(i), read_record(v2).snapshot(i)
        assert a.target_index == b.target_index and a.start_us == b.start_us
        for name in ("starts", "ends", "nr_accesses", "age"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), (i, name)
    for t in rec.target_indexes():
        assert_same(read_record(v2).for_target(t), old.for_target(t))


def test_any_snapshot_range_decodes_alone(pair):
    rec, _v1, v2 = pair
    new = read_record(v2)
    n = rec.nr_snapshots
    for lo, hi in ((0, 1), (0, n), (3, 9), (7, 9), (n - 2, n), (n // 3, 2 * n // 3)):
        part = new.slice(lo, hi)
        assert_same(part, rec.slice(lo, hi))
        assert np.array_equal(part.sizes, rec.slice(lo, hi).sizes)
    # tiny chunks: every chunk boundary, including at snapshots without regions
    got = [p.starts for p in new.chunks(max_regions=7)]
    assert np.array_equal(np.concatenate(got), rec.starts)


def test_same_report_numbers(pair):
    rec, v1, v2 = pair
    old, new = read_record(v1), read_record(v2)
    for rate in (0.0, 0.3):
        assert np.array_equal(report.wss_bytes(new, rate), report.wss_bytes(old, rate))
    assert np.array_equal(report.total_bytes(new), report.total_bytes(old))
    assert np.array_equal(report.record_spans(new), report.record_spans(old))
    assert report.hottest_span(new) == report.hottest_span(old)
    for kw in ({}, {"time_bins": 7, "address_bins": 13}, {"address_range": (0, 2**46)}):
        a, b = report.heatmap(new, **kw), report.heatmap(old, **kw)
        assert np.array_equal(a.grid, b.grid, equal_nan=True) and a.spans == b.spans
    ta = report.pattern_times(new, min_access_rate=0.5)
    assert ta == report.pattern_times(old, min_access_rate=0.5)
    # the numbers the whole-record formulas (before chunking) give
    sizes, offs = rec.ends - rec.starts, rec.region_offsets
    expect = [sizes[a:b][rec.nr_accesses[a:b] > 0].sum() for a, b in zip(offs[:-1], offs[1:])]
    assert np.array_equal(report.wss_bytes(new), expect)


@pytest.mark.parametrize(
    "argv",
    [
        ["heatmap"],
        ["heatmap", "--resol", "9", "17", "--draw_range", "hottest"],
        ["heatmap", "--json"],
        ["wss", "--json"],
        ["wss", "--min_access_rate", "20"],
        ["footprints"],
        ["nr_regions"],
        ["times", "--access_rate", "50", "100"],
        ["access", "--snapshot", "5"],
        ["raw", "--max_snapshots", "4"],
    ],
)
def test_same_cli_output(tmp_path, capsys, argv):
    rec = three_spans(120)
    outs = []
    for layout in ("blocks", "columns"):
        path = str(tmp_path / f"{layout}.data")
        write_record(path, rec, layout=layout)
        assert main(["report", *argv, "-i", path]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] and outs[0]


def test_being_written_then_finalized(tmp_path):
    rec = three_spans(80)
    path = str(tmp_path / "r.data")
    w = RecordWriter(path, {"targets": [{"index": 0, "pid": 1}]})
    for i in range(rec.nr_snapshots):
        w.add(rec.slice(i, i + 1))
        if i in (0, 41):
            live = read_record(path)  # streamed blocks, decoded as in version 1
            assert not live.complete and not live.is_lazy
            assert_same(live, rec.slice(0, i + 1))
    assert version_of(path) == 1
    w.close({"stop_reason": "test"})
    assert version_of(path) == 2
    done = read_record(path)
    assert done.complete and done.is_lazy
    assert_same(done, rec)
    reader = RecordReader(path)
    reader.read()
    assert reader.footer["nr_snapshots"] == 80 and reader.footer["stop_reason"] == "test"
    assert sum(p.nr_snapshots for p in RecordReader(path).blocks()) == 80
    assert np.array_equal(report.wss_bytes(done), report.wss_bytes(rec))


def test_compressed_and_events_stay_blocks(tmp_path):
    rec = make_record(20)
    path = str(tmp_path / "z.data")
    w = RecordWriter(path, {"targets": []}, compress=6)
    w.add(rec.slice(0, 10))
    w.add_event({"attrs": "changed"})
    w.add(rec.slice(10, 20))
    w.close()
    assert version_of(path) == 1
    assert_same(read_record(path), rec)
    plain = str(tmp_path / "p.data")
    w = RecordWriter(plain, {"targets": []})
    w.add(rec.slice(0, 10))
    w.add_event({"attrs": "changed"})
    w.add(rec.slice(10, 20))
    w.close()
    reader = RecordReader(plain)
    assert_same(reader.read(), rec)
    assert reader.events == [{"attrs": "changed"}] and version_of(plain) == 2


def test_truncated_columnar_record(tmp_path):
    rec = three_spans(60)
    path = tmp_path / "r.data"
    write_record(str(path), rec)
    data = path.read_bytes()
    for cut in (100, len(data) // 3, len(data) // 2, len(data) - 200):
        torn = tmp_path / f"t{cut}.data"
        torn.write_bytes(data[:cut])
        with pytest.raises(RecordError) as err:
            read_record(str(torn))
        msg = str(err.value)
        assert "truncated" in msg and str(torn) in msg and "\n" not in msg, msg
    # only the footer lost: every column is there, the record reads (not complete)
    end_len = 12 + len(b'{"nr_snapshots": 60}')
    torn = tmp_path / "nofooter.data"
    torn.write_bytes(data[:-end_len])
    got = read_record(str(torn))
    assert not got.complete
    assert_same(got, rec)
    torn.write_bytes(data[:-5])
    got = read_record(str(torn))
    assert not got.complete and "torn tail" in got.warnings[0]


def test_damaged_column_data_is_found_when_used(tmp_path, capsys):
    rec = three_spans(60)
    path = tmp_path / "r.data"
    write_record(str(path), rec)
    data = bytearray(path.read_bytes())
    reader = RecordReader(str(path))
    size_col = reader.read()._store.size  # type: ignore[union-attr]
    pos = size_col.data_pos + 10
    data[pos] ^= 0x55
    path.write_bytes(bytes(data))
    rec2 = read_record(str(path))  # mapped: nothing checked yet
    assert np.array_equal(rec2.snap_start_us, rec.snap_start_us)
    with pytest.raises(RecordError) as err:
        report.wss_bytes(rec2)
    msg = str(err.value)
    assert "corrupted size column" in msg and "\n" not in msg, msg
    # the CLI says it in one line, no traceback
    assert main(["report", "wss", "-i", str(path)]) != 0
    err_out = capsys.readouterr().err
    assert "corrupted size column" in err_out and "Traceback" not in err_out
    assert len(err_out.strip().splitlines()) == 1
    # a damaged column descriptor (CRC-checked at load) is an error at once
    data = bytearray(path.read_bytes())
    data[pos] ^= 0x55
    first_chunk = data.index(b"COL2")
    data[first_chunk + 12 + 4] ^= 0x01  # the first column's value count
    path.write_bytes(bytes(data))
    with pytest.raises(RecordError, match="corrupted chunk at byte"):
        read_record(str(path))


def test_version_1_files_still_read(tmp_path):
    # a file as pydamon wrote it before version 2: blocks, header version 1
    rec = Record.from_snapshots(make_snapshots(30, nr_targets=1))
    path = str(tmp_path / "old.data")
    stream(path, rec, close=False).close(consolidate=False)
    assert version_of(path) == 1
    got = read_record(path)
    assert got.complete and not got.is_lazy
    assert_same(got, rec)
    size_v2 = tmp_path / "new.data"
    write_record(str(size_v2), rec)
    # columns need no per-block headers: no bigger than blocks
    assert os.path.getsize(size_v2) <= os.path.getsize(path) * 1.05
