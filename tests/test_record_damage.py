"""Corruption loses only what is corrupt (issue 12, findings 3 and 7): readers skip a damaged
chunk or column segment, resume at the next good one, say what was lost (bytes, snapshots),
and every count read from a file is checked before it sizes an allocation."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest

from pydamon.cli.main import main
from pydamon.record import RecordError, read_record, write_record
from pydamon.record.binfmt import CHUNK, MAGIC, RecordReader
from test_record_columnar import three_spans
from test_record_format import assert_same, make_record, stream


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return rc, out.out, out.err


def chunk_offsets(data: bytes) -> list[tuple[bytes, int, int]]:
    """(tag, offset, payload length) of each chunk of an intact record."""
    (meta_len,) = struct.unpack_from("<I", data, len(MAGIC) + 4)
    pos, out = len(MAGIC) + 12 + meta_len, []
    while pos < len(data):
        tag, length, _crc = CHUNK.unpack_from(data, pos)
        out.append((tag, pos, length))
        pos += CHUNK.size + length
    return out


def test_a_flipped_bit_in_a_streamed_record_costs_one_snapshot(tmp_path, capsys):
    rec = make_record(20)
    path = tmp_path / "r.data"
    stream(str(path), rec, close=False).close(consolidate=False)
    data = bytearray(path.read_bytes())
    tag, pos, length = chunk_offsets(bytes(data))[7]  # the 8th snapshot's block
    assert tag == b"BLK1"
    data[pos + CHUNK.size + length // 2] ^= 0x10
    path.write_bytes(bytes(data))

    rc, out, err = run(capsys, "report", "raw", "-i", str(path))
    assert rc == 0
    assert out.count("monitoring_start:") == 19
    assert f"bytes {pos}-{pos + CHUNK.size + length} damaged" in err
    got = read_record(path)
    assert got.nr_snapshots == 19 and got.damage[0].after_snapshot == 7
    assert_same(got, rec.select(np.arange(20) != 7))
    # info shows what was skipped, in text and JSON
    rc, out, _ = run(capsys, "report", "info", "-i", str(path))
    assert rc == 0 and "damaged:" in out and "19 " in out
    rc, out, _ = run(capsys, "report", "info", "-i", str(path), "--json")
    info = json.loads(out)
    assert info["nr_snapshots"] == 19
    assert info["damage"][0]["first_byte"] == pos and info["damage"][0]["after_snapshot"] == 7


def test_a_damaged_chunk_header_is_skipped_to_the_next_good_chunk(tmp_path):
    rec = make_record(20)
    path = tmp_path / "r.data"
    stream(str(path), rec, close=False).close(consolidate=False)
    data = bytearray(path.read_bytes())
    _tag, pos, _length = chunk_offsets(bytes(data))[3]
    data[pos + 4 : pos + 8] = struct.pack("<I", 0xFFFFFF)  # its length: runs past the end
    path.write_bytes(bytes(data))
    got = read_record(path)
    assert got.nr_snapshots == 19 and len(got.damage) == 1
    assert_same(got, rec.select(np.arange(20) != 3))


def test_a_flipped_bit_in_a_finalized_record_costs_one_segment(tmp_path, capsys):
    rec = three_spans(600, 400)  # 240 K regions: several checksum segments per column
    path = tmp_path / "r.data"
    write_record(str(path), rec)
    size_col = RecordReader(str(path)).read()._store.size  # type: ignore[union-attr]
    assert len(size_col.crcs) >= 3
    data = bytearray(path.read_bytes())
    hit = size_col.data_pos + len(size_col.raw) // 2
    data[hit] ^= 0x01
    path.write_bytes(bytes(data))

    rc, out, err = run(capsys, "report", "wss", "-i", str(path), "--json")
    assert rc == 0 and "corrupted size column" in err and "damaged" in err
    wss = json.loads(out)
    kept = wss[0]["nr_snapshots"]
    assert 500 < kept < 600  # one segment's snapshots lost, not the record
    rc, out, _ = run(capsys, "report", "info", "-i", str(path), "--json")
    info = json.loads(out)
    (d,) = info["damage"]
    assert d["first_byte"] <= hit < d["end_byte"] and d["nr_snapshots"] == 600 - kept
    assert info["nr_snapshots"] == kept
    rc, out, _ = run(capsys, "report", "raw", "-i", str(path))
    assert rc == 0 and out.count("monitoring_start:") == kept
    # what is left is exactly the intact snapshots
    got = read_record(path, verify=True)
    lost = np.zeros(600, bool)
    lost[d["after_snapshot"] : d["after_snapshot"] + d["nr_snapshots"]] = True
    assert_same(got, rec.select(~lost))
    # convert writes the intact snapshots too
    rc, _, err = run(capsys, "convert", str(path), "-o", str(tmp_path / "d.json"),
                     "--output_type", "json")  # fmt: skip
    assert rc == 0 and read_record(tmp_path / "d.json").nr_snapshots == kept


def test_a_lost_column_is_a_true_one_line_error(tmp_path, capsys):
    rec = three_spans(30, 40)
    path = tmp_path / "r.data"
    write_record(str(path), rec)
    data = bytearray(path.read_bytes())
    first = data.index(b"COL2")
    data[first + CHUNK.size + 4] ^= 0x01  # the first column's value count (CRC-covered)
    path.write_bytes(bytes(data))
    rc, _out, err = run(capsys, "report", "raw", "-i", str(path))
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert f"corrupted chunk at byte {first}" in err and "column target" in err
    assert "shows what is readable" not in err


def reblock(data: bytes, index: int, edit) -> bytes:
    """``data`` with chunk ``index``'s payload changed by ``edit`` and its checksum redone."""
    _tag, pos, length = chunk_offsets(data)[index]
    payload = bytearray(data[pos + CHUNK.size : pos + CHUNK.size + length])
    edit(payload)
    head = CHUNK.pack(data[pos : pos + 4], len(payload), zlib.crc32(payload))
    return data[:pos] + head + bytes(payload) + data[pos + CHUNK.size + length :]


@pytest.mark.parametrize(
    "what, edit",
    [
        ("region count 2**40", lambda p: p.__setitem__(slice(4, 12), struct.pack("<Q", 2**40))),
        ("region count 2**50", lambda p: p.__setitem__(slice(4, 12), struct.pack("<Q", 2**50))),
        ("snapshot count", lambda p: p.__setitem__(slice(0, 4), struct.pack("<I", 2**31))),
        ("column count", lambda p: p.__setitem__(12 + 1, 200)),
    ],
)
def test_counts_under_a_valid_checksum_are_checked_before_allocating(tmp_path, capsys, what, edit):
    rec = make_record(10)
    path = tmp_path / "r.data"
    stream(str(path), rec, close=False).close(consolidate=False)
    path.write_bytes(reblock(path.read_bytes(), 4, edit))
    got = read_record(path)
    assert got.nr_snapshots == 9, what
    assert "bad snapshot block" in got.damage[0].what or "block" in got.damage[0].what
    assert_same(got, rec.select(np.arange(10) != 4))
    rc, _, err = run(capsys, "report", "wss", "-i", str(path))
    assert rc == 0 and "damaged" in err


def test_a_gap_index_out_of_range_is_damage_not_an_index_error(tmp_path):
    from pydamon.record.blocks import COL_GAP_INDEX, DTYPES

    rec = make_record(6)
    path = tmp_path / "r.data"
    stream(str(path), rec, close=False).close(consolidate=False)

    def edit(p: bytearray) -> None:
        pos = 16
        for _ in range(p[13]):
            col_id, dtype, _shift, codec, nbytes = struct.unpack_from("<BBBBI", p, pos)
            if col_id == COL_GAP_INDEX:
                assert codec == 0
                width = np.dtype(DTYPES[dtype]).itemsize
                p[pos + 8 : pos + 8 + width] = b"\xff" * width
                return
            pos += 8 + nbytes

    path.write_bytes(reblock(path.read_bytes(), 2, edit))
    got = read_record(path)
    assert got.nr_snapshots == 5 and "gap index" in got.damage[0].what


@pytest.mark.parametrize(
    "meta",
    [
        {"targets": 5},
        {"targets": [{"index": "zero"}]},
        {"targets": [{"index": 0, "pid": "12"}]},
        {"targets": [7]},
        {"attrs": "fast"},
        {"attrs": {"ops_update_interval_us": "1s"}},
        {"start_time_unix": "yesterday"},
        [1, 2, 3],
    ],
)
def test_header_metadata_of_the_wrong_types_is_a_one_line_error(tmp_path, capsys, meta):
    rec = make_record(4)
    good = tmp_path / "good.data"
    write_record(str(good), rec)
    data = good.read_bytes()
    (meta_len,) = struct.unpack_from("<I", data, len(MAGIC) + 4)
    raw = json.dumps(meta).encode()
    head = data[: len(MAGIC) + 4] + struct.pack("<II", len(raw), zlib.crc32(raw))
    bad = tmp_path / "bad.data"
    bad.write_bytes(head + raw + data[len(MAGIC) + 12 + meta_len :])
    with pytest.raises(RecordError, match="header"):
        read_record(bad)
    for argv in (["report", "info"], ["report", "raw"], ["convert", "-o", str(tmp_path / "o")]):
        where = ["-i", str(bad)] if argv[0] == "report" else [str(bad)]
        rc, _, err = (
            run(capsys, *argv[:2], *where, *argv[2:])
            if argv[0] == "report"
            else run(capsys, "convert", *where, *argv[1:])
        )
        assert rc == 1 and len(err.strip().splitlines()) == 1 and "header" in err, (argv, err)
