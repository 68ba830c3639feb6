"""``pydamon report`` end to end on pydamon and damo records (subprocess, as typed)."""

from __future__ import annotations

import json
import subprocess
import sys
import zlib

import numpy as np
import pytest

from pydamon import report
from pydamon.record import Record, export_record, read_record

PYDAMON = [sys.executable, "-m", "pydamon.cli.main"]
REPORTS = ("heatmap", "wss", "access", "footprints", "times", "nr_regions", "raw", "info")


def pydamon(*args: str, cwd=None, check: bool = True):
    out = subprocess.run([*PYDAMON, *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    if check:
        assert out.returncode == 0, out.stderr
    return out


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A pydamon record of a simulated workload, and the same record in damo's two forms."""
    d = tmp_path_factory.mktemp("rec")
    pydamon("record", "--sim", "phases", "--sim_size", "256M", "--timeout", "12", "--seed", "1",
            "-o", "pydamon.data", "-q", cwd=d)  # fmt: skip
    rec = read_record(d / "pydamon.data")
    export_record(rec, str(d / "damon.data"), "json_compressed")
    export_record(rec, str(d / "damon.json"), "json")
    return d


@pytest.mark.parametrize("rtype", REPORTS)
def test_every_report_as_typed(recorded, rtype):
    out = pydamon("report", rtype, "-i", "damon.data", cwd=recorded)
    assert out.stdout.strip() and not out.stderr


@pytest.mark.parametrize("name", ["pydamon.data", "damon.data", "damon.json"])
def test_every_report_on_every_format(recorded, name, capsys, monkeypatch):
    """The same reports in-process (the CLI's main(), without interpreter start-up each time):
    the damo forms of a record report the same as the record itself."""
    from pydamon.cli.main import main

    monkeypatch.chdir(recorded)
    results = {}
    for rtype in REPORTS:
        assert main(["report", rtype, "-i", name]) == 0
        assert capsys.readouterr().out.strip()
        if rtype != "raw":
            assert main(["report", rtype, "-i", name, "--json"]) == 0
            results[rtype] = json.loads(capsys.readouterr().out)
    reference = (
        json.loads((recorded / "reference.json").read_text()) if name != "pydamon.data" else None
    )
    if reference is None:
        (recorded / "reference.json").write_text(json.dumps(results))
    else:
        for rtype in ("wss", "nr_regions", "times", "heatmap"):
            assert results[rtype] == reference[rtype], rtype


def test_default_input_is_pydamon_data(recorded):
    assert "# <percentile> <wss>" in pydamon("report", "wss", cwd=recorded).stdout


def test_wss_numbers_match_the_api(recorded):
    rec = read_record(recorded / "pydamon.data")
    api = report.wss_bytes(rec)
    # damo's wss: regions with nr_accesses >= 1 sample, percentiles 'lower'
    expected = np.sort(api)
    for name in ("pydamon.data", "damon.data"):
        data = json.loads(
            pydamon(
                "report", "wss", "-i", name, "--json", "--range", "0", "101", "10", cwd=recorded
            ).stdout  # fmt: skip
        )[0]
        assert data["nr_snapshots"] == rec.nr_snapshots
        assert data["average_bytes"] == pytest.approx(api.mean())
        for p, v in data["percentiles"].items():
            assert v == int(expected[min(int(len(expected) * int(p) / 100), len(expected) - 1)])
        all_wss = json.loads(
            pydamon("report", "wss", "-i", name, "--json", "--all_wss", cwd=recorded).stdout
        )[0]["all_bytes"]
        assert all_wss == api.tolist()
    # the same from the record's snapshots made into a record again (what the demo does)
    assert report.wss_bytes(Record.from_snapshots(list(rec.snapshots()))).tolist() == api.tolist()
    # and by hand from the snapshots, as damo computes it
    by_hand = [int(s.sizes[s.nr_accesses >= 1].sum()) for s in rec.snapshots()]
    assert by_hand == api.tolist()
    text = pydamon("report", "wss", cwd=recorded).stdout
    assert "# avr:" in text and text.count("|") == 10


def test_heatmap_terminal_and_png(recorded):
    text = pydamon("report", "heatmap", "--resol", "10", "50", cwd=recorded).stdout.splitlines()
    rows = [line for line in text if not line.startswith("#")]
    assert len(rows) == 10 and all(len(r) == 50 and r.isdigit() for r in rows)
    assert any(line.startswith("# x-axis: space") for line in text)
    pydamon("report", "heatmap", "--output", "heat.png", "--resol", "60", "120", cwd=recorded)
    import matplotlib.image as mpimg

    img = mpimg.imread(str(recorded / "heat.png"))
    assert img.shape[:2] == (768, 1024)
    # the grid the image shows has hot and cold cells; they render differently
    grid = np.asarray(
        json.loads(
            pydamon("report", "heatmap", "--resol", "60", "120", "--json", cwd=recorded).stdout
        )["access_rate"]
    )
    assert grid.max() > 0.3 and grid.min() < 0.05
    rgb = img[..., :3].reshape(-1, 3)
    luminance = rgb.mean(axis=1)
    # inferno: cold cells are near black, hot cells bright yellow/orange
    dark = (luminance < 0.1).mean()
    bright = ((rgb[:, 0] > 0.8) & (rgb[:, 1] > 0.5) & (rgb[:, 2] < 0.6)).mean()
    assert dark > 0.02 and bright > 0.02, (dark, bright)
    pydamon("report", "heatmap", "--output", "heat.svg", cwd=recorded)
    assert (recorded / "heat.svg").read_text().lstrip().startswith("<?xml")


def test_heatmap_ranges_and_raw(recorded):
    rec = read_record(recorded / "pydamon.data")
    lo, hi = report.hottest_span(rec)
    mid = (lo + hi) // 2
    out = pydamon("report", "heatmap", "--time_range", "2s", "4s", "--address_range",
                  hex(lo), hex(mid), "--resol", "4", "8", "--output", "raw",
                  cwd=recorded).stdout.strip().split("\n")  # fmt: skip
    assert len(out) == 32
    t, a, heat = out[0].split()
    assert int(a) == lo and float(heat) >= 0


def test_times_and_access(recorded):
    data = json.loads(pydamon("report", "times", "--access_rate", "50", "100", "--json",
                              cwd=recorded).stdout)  # fmt: skip
    assert data[0]["total_us"] > 0
    none = json.loads(pydamon("report", "times", "--sz_region", "100G", "max", "--json",
                              cwd=recorded).stdout)  # fmt: skip
    assert none[0]["ranges_us"] == []
    acc = json.loads(pydamon("report", "access", "--snapshot", "0", "--json", cwd=recorded).stdout)
    rec = read_record(recorded / "pydamon.data")
    assert [r["start"] for r in acc["regions"]] == rec.snapshot(0).starts.tolist()
    assert set(acc["temperature_percentiles"]) == {"0", "25", "50", "75", "100"}
    top = pydamon("report", "access", "--sort_regions_by", "access_rate", "--top", "3",
                  cwd=recorded).stdout  # fmt: skip
    assert "temperature percentiles" in top


def one_line_error(out, code: int, *words: str) -> None:
    assert out.returncode == code, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    for w in words:
        assert w in out.stderr, out.stderr


def test_bad_records_and_options(recorded, tmp_path, capsys, monkeypatch):
    data = (recorded / "pydamon.data").read_bytes()
    (tmp_path / "trunc.data").write_bytes(data[:30])
    one_line_error(pydamon("report", "wss", "-i", str(tmp_path / "trunc.data"), check=False),
                   1, "truncated")  # fmt: skip
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 3] ^= 0x55
    (tmp_path / "corrupt.data").write_bytes(bytes(corrupt))
    # damage is skipped and named (tests/test_record_damage.py); in this small record the
    # damaged segment holds every snapshot's values
    damaged = pydamon("report", "heatmap", "-i", str(tmp_path / "corrupt.data"), check=False)
    assert damaged.returncode == 1 and "Traceback" not in damaged.stderr
    assert "damaged" in damaged.stderr and "no snapshots that are intact" in damaged.stderr
    out = pydamon("report", "nosuch", cwd=recorded, check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr

    # the rest in-process: same main(), same one-line errors, less start-up time
    from pydamon.cli.main import main

    (tmp_path / "z.data").write_bytes(zlib.compress(json.dumps(list(range(5000))).encode())[:200])
    (tmp_path / "empty").mkdir()
    cases = [
        (["wss", "-i", str(tmp_path / "z.data")], 1, "corrupted"),
        (["wss", "-i", str(tmp_path / "none")], 1, "no such record file"),
        (["wss", "-i", str(tmp_path / "empty")], 1, "directory"),
        (["access", "--snapshot", "100000"], 2, "no snapshot"),
        (["wss", "--target", "7"], 2, "no target 7"),
        (["heatmap", "--address_range", "0x2000", "0x1000"], 2, "address_range"),
        (["heatmap", "--resol", "0", "10"], 2, "resol"),
        (["wss", "--range", "50", "10", "5"], 2, "--range"),
        (["times", "--age", "old", "max"], 2, "--age"),
    ]
    monkeypatch.chdir(recorded)
    for argv, code, words in cases:
        assert main(["report", *argv]) == code, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], (argv, err)
    monkeypatch.chdir(tmp_path / "empty")
    assert main(["report", "wss"]) == 2
    assert "pydamon record" in capsys.readouterr().err


def test_report_heatmap_is_the_api_heatmap(recorded):
    """``report heatmap --json`` is pydamon.report.heatmap of the record; where time rows align
    with aggregations, the demo's rows (each snapshot weighted by its overlap) are the same."""
    rec = read_record(recorded / "pydamon.data")
    n = rec.nr_snapshots
    for rows in (n, n // 4):
        argv = ("report", "heatmap", "--json", "--resol", str(rows), "64")
        data = json.loads(pydamon(*argv, cwd=recorded).stdout)
        hm = report.heatmap(rec, time_bins=rows, address_bins=64)
        assert data["spans"] == [list(sp) for sp in hm.spans]
        assert data["access_rate"] == [
            [None if np.isnan(v) else round(float(v), 6) for v in row] for row in hm.grid
        ]
        overlap = report.heatmap(rec, time_bins=rows, address_bins=64, time_weight="overlap")
        assert overlap.spans == hm.spans
        assert np.allclose(overlap.grid, hm.grid, atol=1e-9, equal_nan=True)
