"""``pydamon demo`` end to end, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

from pydamon.ops.sim import get_workload


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pydamon.cli.main", "demo", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_demo_shows_heatmap_and_wss_beside_the_truth():
    out = demo("--duration", "4", "--rows", "8", "--color", "always")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "SIMULATED" in text
    assert "measured (DAMON)" in text and "ground truth" in text
    rows = [line for line in text.splitlines() if line.count(" | ") == 2]
    assert len(rows) == 1 + 8  # header + heatmap rows
    assert "\x1b[48;5;" in rows[1]  # coloured cells
    assert "working set size" in text and "avg" in text
    assert "precision" in text and "recall" in text
    assert out.stderr == ""


def test_demo_plain_output_tracks_the_truth():
    out = demo("--workload", "phases", "--duration", "10", "--rows", "10", "--cols", "20")
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.count(" | ") == 2][1:]
    measured = [r.split(" | ")[0] for r in rows]
    truth = [r.split(" | ")[1] for r in rows]
    assert all(set(m) <= set("0123456789") for m in measured)
    # phase a-hot (first half), b-hot (second half): left half hot, then right half hot
    assert truth[0][:10].count("7") == 10 and truth[-1][10:].count("7") == 10
    assert measured[2][:10].count("0") == 0 and measured[-1][:10].count("0") == 10


def test_demo_runs_a_workload_file(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps(get_workload("hotcold", 64 << 20).to_dict()))
    out = demo("--workload", str(path), "--duration", "2", "--color", "never")
    assert out.returncode == 0, out.stderr
    assert "workload 'hotcold'" in out.stdout


def test_demo_bad_input_gets_one_line_errors():
    for args, what in [
        (("--workload", "nope"), "unknown workload"),
        (("--duration", "0"), "--duration"),
        (("--size", "lots"), "bad size"),
        (("--sample-us", "300000"), "sample interval"),
        (("--workload", "/nonexistent/w.yaml"), "cannot read workload file"),
    ]:
        out = demo(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert what in out.stderr
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert "Traceback" not in out.stderr


def test_demo_draws_the_record_reports_of_its_snapshots(tmp_path):
    """The demo's heatmap and wss are pydamon.report's, on a record of the demo's snapshots;
    with time rows aligned to aggregations its heatmap is what ``pydamon report heatmap`` draws
    of the same snapshots written to a file."""
    import numpy as np

    from pydamon.cli import demo as demo_cli
    from pydamon.cli.main import build_parser
    from pydamon.record import Record, write_record
    from pydamon.report import format_bytes, heatmap, percentiles_of, wss_bytes
    from pydamon.report.render import heatmap_lines

    rows, cols = 8, 24
    args = build_parser().parse_args(
        ["demo", "--mode", "sim", "--workload", "zigzag", "--duration", "4", "--seed", "3"]
    )
    run = demo_cli.monitor_sim(args)
    text = demo_cli.show(run, rows=rows, cols=cols, color=False, simulated=True).splitlines()
    table = [line.split(" | ") for line in text if line.count(" | ") == 2][1:]
    rec = Record.from_snapshots(run.snapshots)
    time_range = (run.snapshots[0].start_us, run.snapshots[-1].end_us)
    hm = heatmap(rec, time_bins=rows, address_bins=cols, time_range=time_range,
                 time_weight="overlap")  # fmt: skip
    assert [r[0] for r in table] == heatmap_lines(hm)
    span = (hm.spans[0][0], hm.spans[-1][1])
    truth = heatmap(Record.from_snapshots(run.truth), time_bins=rows, address_bins=cols,
                    time_range=time_range, address_range=span, time_weight="overlap")  # fmt: skip
    assert [r[1] for r in table] == heatmap_lines(truth)
    start = text.index("working set size (bytes accessed in an aggregation interval), percentiles:")
    measured = [line.split()[1:3] for line in text[start + 2 : start + 7]]
    wss = percentiles_of(wss_bytes(rec))
    assert measured == [format_bytes(v).split() for _, v in wss]
    assert len(set(v for _, v in wss)) > 1  # the zigzag's working set moves: not a flat line

    # 40 aggregations of 100 ms in 8 rows: five whole snapshots a row, by either rule
    write_record(tmp_path / "demo.data", rec)
    out = subprocess.run(
        [sys.executable, "-m", "pydamon.cli.main", "report", "heatmap", "-i", "demo.data",
         "--json", "--resol", str(rows), str(cols)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    reported = json.loads(out.stdout)
    assert reported["spans"] == [list(sp) for sp in hm.spans]
    grid = np.array([[np.nan if v is None else v for v in row] for row in reported["access_rate"]])
    assert np.allclose(grid, hm.grid, atol=1e-6, equal_nan=True)
