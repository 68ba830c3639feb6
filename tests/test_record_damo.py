"""damo's record formats: hand-written fixtures following damo's schema, and our exports."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from pydamon.record import RecordError, export_record, read_record
from pydamon.record.damo import parse_bytes, parse_ns, parse_us

# Two snapshots of one target, as damo writes them (numbers as raw strings).
DAMO_RAW = [
    {
        "kdamond_idx": 0,
        "context_idx": 0,
        "intervals": {"sample_us": "5000", "aggr_us": "100000", "ops_update_us": "1000000"},
        "scheme_idx": None,
        "target_id": 4242,
        "scheme_filters": [],
        "snapshots": [
            {
                "start_time": "1000000000",
                "end_time": "1100000000",
                "regions": [
                    {
                        "start": "4096",
                        "end": "12288",
                        "nr_accesses": {"samples": 20, "percent": None},
                        "age": {"usec": "300000", "aggr_intervals": "3"},
                        "sz_filter_passed": "0",
                    },
                    {
                        "start": "12288",
                        "end": "1060864",
                        "nr_accesses": {"samples": 0, "percent": None},
                        "age": {"usec": None, "aggr_intervals": "10"},
                        "sz_filter_passed": "0",
                    },
                ],
                "total_bytes": "1056768",
            },
            {
                "start_time": "1100000000",
                "end_time": "1200000000",
                "regions": [
                    {
                        "start": "4096",
                        "end": "1060864",
                        "nr_accesses": {"samples": 2, "percent": None},
                        "age": {"usec": "0", "aggr_intervals": "0"},
                    },
                ],
                "total_bytes": None,
            },
        ],
    }
]

# The same content in damo's human (non-raw) number forms, older layout without some keys.
DAMO_HUMAN = [
    {
        "intervals": {"sample_us": "5 ms", "aggr_us": "100 ms", "ops_update_us": "1 s"},
        "target_id": 4242,
        "snapshots": [
            {
                "start_time": "1 s",
                "end_time": "1 s 100 ms",
                "regions": [
                    {
                        "start": "4,096",
                        "end": "12 KiB",
                        "nr_accesses": {"samples": None, "percent": "100"},
                        "age": {"usec": "300 ms", "aggr_intervals": None},
                    },
                    {
                        "start": "12 KiB",
                        "end": "1,060,864",
                        "nr_accesses": {"samples": "0", "percent": None},
                        "age": {"usec": "1 s", "aggr_intervals": None},
                    },
                ],
            },
            {
                "start_time": "1 s 100 ms",
                "end_time": "1 s 200 ms",
                "regions": [
                    {
                        "start": "4 KiB",
                        "end": "1,060,864",
                        "nr_accesses": {"samples": 2, "percent": None},
                        "age": {"usec": "0 ns", "aggr_intervals": "0"},
                    },
                ],
            },
        ],
    }
]

PERF_SCRIPT = """\
kdamond.0 4452 [000] 1.100000: damon:damon_aggregated: target_id=4242 nr_regions=2 4096-12288: 20 3
kdamond.0 1 [000] 1.100000: damon:damon_aggregated: target_id=4242 nr_regions=2 12288-1060864: 0 10
kdamond.0 1 [000] 1.200000: damon:damon_aggregated: target_id=4242 nr_regions=1 4096-1060864: 2 0
"""


def check_fixture(rec, *, perf: bool = False) -> None:
    assert rec.nr_snapshots == 2
    assert rec.targets[0].target_id == 4242
    assert rec.starts.tolist() == [4096, 12288, 4096]
    assert rec.ends.tolist() == [12288, 1060864, 1060864]
    assert rec.nr_accesses.tolist() == [20, 0, 2]
    assert rec.age.tolist() == [3, 10, 0]
    assert rec.snap_end_us.tolist() == [1_100_000, 1_200_000]
    assert rec.snap_start_us.tolist() == [1_000_000, 1_100_000]
    if not perf:
        assert rec.max_nr_accesses.tolist() == [20, 20]


@pytest.mark.parametrize("data", [DAMO_RAW, DAMO_HUMAN], ids=["raw", "human"])
def test_read_damo_json_and_compressed(tmp_path, data):
    (tmp_path / "damon.json").write_text(json.dumps(data, indent=4))
    (tmp_path / "damon.data").write_bytes(zlib.compress(json.dumps(data).encode()))
    rec = read_record(str(tmp_path / "damon.json"))
    check_fixture(rec)
    assert rec.source_format == "damo-json"
    rec = read_record(str(tmp_path / "damon.data"))
    check_fixture(rec)
    assert rec.source_format == "damo-json_compressed"


def test_read_damo_perf_script(tmp_path):
    (tmp_path / "perf.data.script").write_text(PERF_SCRIPT)
    check_fixture(read_record(str(tmp_path / "perf.data.script")), perf=True)


def test_damo_mem_footprint_side_file(tmp_path):
    (tmp_path / "damon.data").write_bytes(zlib.compress(json.dumps(DAMO_RAW).encode()))
    side = [
        {"time": 100.0 + k * 0.1, "footprints": [
            {"pid": 4242, "footprint": {"size": 1000 + k, "resident": 500 + k, "shared": 0,
                                        "trs": 0, "lrs": 0, "drs": 0, "dt": 0}},
            {"pid": None, "footprint": {"total": 2048, "free": 1024, "available": None,
                                        "buffers": None, "cached": None}}]}
        for k in range(2)
    ]  # fmt: skip
    (tmp_path / "damon.data.mem_footprint").write_text(json.dumps(side))
    rec = read_record(str(tmp_path / "damon.data"))
    assert rec.rss_bytes[0] > 0 and rec.sys_free_bytes.tolist() == [1024 * 1024] * 2


def test_export_follows_damo_schema_and_reads_back(tmp_path):
    (tmp_path / "in.json").write_text(json.dumps(DAMO_RAW))
    rec = read_record(str(tmp_path / "in.json"))
    for fmt in ("json", "json_compressed"):
        out = tmp_path / f"out.{fmt}"
        export_record(rec, str(out), fmt)
        raw = out.read_bytes()
        data = json.loads(zlib.decompress(raw) if fmt == "json_compressed" else raw)
        # damo's reader: DamonRecord.from_kvpairs needs these keys and numeric text
        assert set(data[0]) >= {"kdamond_idx", "context_idx", "intervals", "scheme_idx",
                                "target_id", "scheme_filters", "snapshots"}  # fmt: skip
        assert set(data[0]["intervals"]) == {"sample_us", "aggr_us", "ops_update_us"}
        snap = data[0]["snapshots"][0]
        assert int(snap["start_time"]) == 1_000_000_000 and int(snap["end_time"]) == 1_100_000_000
        region = snap["regions"][0]
        assert region["nr_accesses"]["samples"] == 20
        assert int(region["age"]["aggr_intervals"]) == 3 and int(region["age"]["usec"]) == 300000
        assert int(snap["total_bytes"]) == 1056768
        check_fixture(read_record(str(out)))


@pytest.mark.parametrize(
    "content, words",
    [
        (zlib.compress(b"[{]")[:-4], "corrupted"),
        (b'[{"snapshots": 3}]', "not a damo record"),
        (b"[1, 2", "not valid JSON"),
    ],
)
def test_bad_damo_files(tmp_path, content, words):
    (tmp_path / "x").write_bytes(content)
    with pytest.raises(RecordError) as err:
        read_record(str(tmp_path / "x"))
    assert words in str(err.value) and "\n" not in str(err.value)


def test_number_forms():
    assert parse_bytes("4 KiB") == 4096 and parse_bytes("1,024") == 1024
    assert parse_bytes(12) == 12 and parse_bytes("max") == 2**64 - 1
    assert parse_ns("1 s 200 ms") == 1_200_000_000 and parse_ns("1500") == 1500
    assert parse_us("5 ms") == 5000 and parse_us("250") == 250 and parse_us("2s") == 2_000_000
    with pytest.raises(ValueError):
        parse_bytes("lots")


def test_parquet_export(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    (tmp_path / "in.json").write_text(json.dumps(DAMO_RAW))
    rec = read_record(str(tmp_path / "in.json"))
    export_record(rec, str(tmp_path / "r.parquet"), "parquet")
    table = pq.read_table(str(tmp_path / "r.parquet"))
    assert table.num_rows == 3
    assert np.array_equal(table.column("nr_accesses").to_numpy(), [20, 0, 2])
    with pytest.raises(RecordError, match="Parquet"):
        read_record(str(tmp_path / "r.parquet"))
