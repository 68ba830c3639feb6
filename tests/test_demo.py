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
