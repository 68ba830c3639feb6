"""Bounded memory and one-line errors for every input (issue 12, findings 4, 5 (report options)
and 7): damo JSON is written snapshot by snapshot, an interrupted export names its ``.part``,
heatmap resolutions are bounded, odd damo JSON values are one-line errors."""

from __future__ import annotations

import copy
import json
import os
import resource
import signal
import subprocess
import sys
import zlib

import numpy as np
import pytest

from pydamon.cli.main import main
from pydamon.record import read_record, write_record
from test_record_columnar import three_spans

PYDAMON = [sys.executable, "-m", "pydamon.cli.main"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return rc, out.out, out.err


def damo_reference(rec) -> list[dict]:
    """damo's record list built the obvious way (one dict per region), to compare against."""
    out = []
    for tidx in rec.target_indexes():
        sub = rec.for_target(tidx)
        snaps = []
        for s in sub.snapshots():
            max_nr = max(s.aggr_interval_us // (s.sample_interval_us or 1), 1)
            snaps.append({
                "start_time": str(s.start_us * 1000), "end_time": str(s.end_us * 1000),
                "regions": [
                    {"start": str(a), "end": str(b),
                     "nr_accesses": {"samples": n, "percent": n * 100 // max_nr},
                     "age": {"usec": str(g * s.aggr_interval_us), "aggr_intervals": str(g)},
                     "sz_filter_passed": "0"}
                    for a, b, n, g in zip(s.starts.tolist(), s.ends.tolist(),
                                          s.nr_accesses.tolist(), s.age.tolist())
                ],
                "total_bytes": str(int((s.ends - s.starts).sum())),
            })  # fmt: skip
        tid = rec.target_id_of(tidx)
        out.append({
            "kdamond_idx": 0, "context_idx": 0,
            "intervals": {"sample_us": str(int(sub.snap_sample_us[0])),
                          "aggr_us": str(int(sub.snap_aggr_us[0])), "ops_update_us": "1000000"},
            "scheme_idx": None, "target_id": tid if tid is not None else tidx,
            "scheme_filters": [], "snapshots": snaps,
        })  # fmt: skip
    return out


def test_streamed_damo_json_is_damos_text(tmp_path, capsys):
    from test_record_format import make_record

    rec = make_record(12)  # two targets, holes between regions
    src = tmp_path / "r.data"
    write_record(str(src), rec)
    for fmt in ("json", "json_compressed"):
        out = tmp_path / f"r.{fmt}"
        rc, _, _ = run(capsys, "convert", str(src), "-o", str(out), "--output_type", fmt)
        assert rc == 0
        data = out.read_bytes()
        text = zlib.decompress(data) if fmt == "json_compressed" else data
        assert text.decode() == json.dumps(damo_reference(rec), indent=4)


#: Runs pydamon's main, then prints the process's peak RSS (VmHWM: of this program only; a
#: forked child's ru_maxrss would count the parent's pages from before the exec).
PEAK_RSS = (
    "import sys\nfrom pydamon.cli.main import main\nrc = main(sys.argv[1:])\n"
    "hwm = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
    "print('peak_kib', hwm, file=sys.stderr)\nsys.exit(rc)\n"
)


def peak_rss_mib(argv: list[str]) -> tuple[int, float, str]:
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, *argv], capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    peak = float(lines[-1].split()[1]) / 1024 if lines and lines[-1].startswith("peak_kib") else 0
    return proc.returncode, peak, proc.stderr


def test_convert_to_damo_json_holds_one_range_of_snapshots(tmp_path):
    rec = three_spans(400, 600)  # 240 K regions: ~800 MiB as damo's list of dicts
    src = tmp_path / "r.data"
    write_record(str(src), rec)
    rc, peak, err = peak_rss_mib(["convert", str(src), "-o", str(tmp_path / "d.json.z")])
    assert rc == 0, err
    assert 0 < peak < 200, peak  # interpreter, numpy and one range of snapshots
    got = read_record(tmp_path / "d.json.z")
    assert got.nr_snapshots == 400 and got.nr_regions_total == rec.nr_regions_total


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
    resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))


def test_an_interrupted_export_names_its_part_file(tmp_path):
    # the pydamon stream fits the file size limit, damo's much bigger JSON does not
    out = tmp_path / "damon.data"
    proc = subprocess.run(
        [*PYDAMON, "record", "--sim", "hotcold", "--timeout", "20", "-q", "-o", str(out),
         "--output_type", "json"],
        capture_output=True, text=True, preexec_fn=_limit_file_size, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    part = f"{out}.part"
    assert len(proc.stderr.strip().splitlines()) == 1 and part in proc.stderr
    assert os.path.exists(part) and not os.path.exists(out)
    rep = subprocess.run([*PYDAMON, "report", "wss", "-i", part], capture_output=True, text=True)
    assert rep.returncode == 0 and "target_id" in rep.stdout, rep.stderr


def test_heatmap_resolution_is_bounded(tmp_path, capsys):
    src = tmp_path / "r.data"
    write_record(str(src), three_spans(20, 40))
    rc, _, err = run(capsys, "report", "heatmap", "-i", str(src), "--resol", "100000", "100000")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "too big" in err
    rc, out, _ = run(capsys, "report", "heatmap", "-i", str(src), "--resol", "2048", "2048",
                     "--output", "raw")  # fmt: skip
    assert rc == 0 and out
    from pydamon.report.heatmap import heatmap

    with pytest.raises(ValueError, match="too big"):
        heatmap(read_record(src), time_bins=10**5, address_bins=10**5)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["wss", "--exclude_samples", "-5"], "--exclude_samples"),
        (["wss", "--min_access_rate", "200"], "--min_access_rate"),
        (["wss", "--min_access_rate", "-1"], "--min_access_rate"),
        (["wss", "--min_access_rate", "nan"], "--min_access_rate"),
        (["access", "--top", "-3"], "--top"),
        (["raw", "--max_snapshots", "-1"], "--max_snapshots"),
    ],
)
def test_report_option_values_are_checked(tmp_path, capsys, argv, words):
    src = tmp_path / "r.data"
    write_record(str(src), three_spans(20, 40))
    rc, _, err = run(capsys, "report", *argv, "-i", str(src))
    assert rc == 2 and len(err.strip().splitlines()) == 1 and words in err, err


BASE = [{
    "kdamond_idx": 0, "context_idx": 0,
    "intervals": {"sample_us": "5000", "aggr_us": "100000", "ops_update_us": "1000000"},
    "scheme_idx": None, "target_id": 1, "scheme_filters": [],
    "snapshots": [{"start_time": "0", "end_time": "100000000", "regions": [
        {"start": "4096", "end": "8192", "nr_accesses": {"samples": 1, "percent": 5},
         "age": {"usec": "0", "aggr_intervals": "0"}, "sz_filter_passed": "0"}],
        "total_bytes": "4096"}],
}]  # fmt: skip


def _edit(path: tuple, value):
    def apply(d):
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value

    return apply


@pytest.mark.parametrize(
    "edit",
    [
        _edit((0, "snapshots", 0, "regions", 0, "end"), str(2**70)),
        _edit((0, "snapshots", 0, "regions", 0, "start"), 2**70),
        _edit((0, "snapshots", 0, "end_time"), "1e999"),
        _edit((0, "snapshots", 0, "end_time"), 2**80),
        _edit((0, "intervals"), 5),
        _edit((0, "intervals"), ["5000"]),
        _edit((0,), 5),
        _edit((0, "snapshots"), {"0": 1}),
        _edit((0, "snapshots", 0, "regions"), 7),
        _edit((0, "snapshots", 0, "regions", 0), "4096-8192"),
        _edit((0, "target_id"), [1]),
        _edit((0, "snapshots", 0, "regions", 0, "nr_accesses"), {"samples": 2**70}),
    ],
)
def test_odd_damo_json_values_are_one_line_errors(tmp_path, capsys, edit):
    data = copy.deepcopy(BASE)
    edit(data)
    for name, blob in (("d.json", json.dumps(data).encode()),
                       ("d.json.z", zlib.compress(json.dumps(data).encode()))):  # fmt: skip
        path = tmp_path / name
        path.write_bytes(blob)
        for argv in (["report", "raw", "-i", str(path)], ["report", "info", "-i", str(path)],
                     ["convert", str(path), "-o", str(tmp_path / "o.data"),
                      "--output_type", "pydamon"]):  # fmt: skip
            rc, _, err = run(capsys, *argv)
            assert rc == 1 and len(err.strip().splitlines()) == 1, (argv, err)
            assert "not a damo record" in err


def test_a_valid_damo_json_still_reads(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(BASE))
    rec = read_record(path)
    assert rec.nr_snapshots == 1 and np.array_equal(rec.starts, [4096])
