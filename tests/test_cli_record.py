"""``pydamon record`` end to end, as a user types it (subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pydamon.record import read_record

PYDAMON = [sys.executable, "-m", "pydamon.cli.main"]


def pydamon(*args: str, cwd=None, check: bool = True, timeout: float = 120):
    out = subprocess.run(
        [*PYDAMON, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )
    if check:
        assert out.returncode == 0, out.stderr
    return out


def assert_one_line_error(out, exit_code: int, *words: str) -> None:
    assert out.returncode == exit_code, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_record_sim_workload_with_options(tmp_path):
    out = pydamon(
        "record", "--sim", "stairs", "--sim_size", "256M", "--timeout", "5", "--seed", "3",
        "-s", "10ms", "-a", "200ms", "--monitoring_nr_regions_range", "10", "200",
        "-o", "s.data", "--json", cwd=tmp_path,
    )  # fmt: skip
    summary = json.loads(out.stdout)
    assert summary["nr_snapshots"] == 25 and summary["stop_reason"] == "timeout"
    rec = read_record(tmp_path / "s.data")
    assert rec.complete and rec.nr_snapshots == 25
    assert set(rec.snap_sample_us.tolist()) == {10_000}
    assert set(rec.snap_aggr_us.tolist()) == {200_000}
    assert rec.nr_regions.max() <= 200
    assert rec.meta["ops"] == "sim" and rec.targets[0].name == "sim:stairs"
    # the same seed reproduces the record exactly
    pydamon("record", "--sim", "stairs", "--sim_size", "256M", "--timeout", "5", "--seed", "3",
            "-s", "10ms", "-a", "200ms", "--monitoring_nr_regions_range", "10", "200",
            "-o", "s2.data", "-q", cwd=tmp_path)  # fmt: skip
    again = read_record(tmp_path / "s2.data")
    assert (again.starts == rec.starts).all() and (again.nr_accesses == rec.nr_accesses).all()


def test_record_damo_output_type(tmp_path):
    pydamon("record", "--sim", "hotcold", "--timeout", "2", "--output_type", "json_compressed",
            "-o", "damon.data", "-q", cwd=tmp_path)  # fmt: skip
    rec = read_record(tmp_path / "damon.data")
    assert rec.source_format == "damo-json_compressed" and rec.nr_snapshots == 20
    assert not (tmp_path / "damon.data.part").exists()


def _start_long_recording(tmp_path, name: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [*PYDAMON, "record", "--sim", "hotcold", "--timeout", "100000", "-o", name, "-q"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    path = tmp_path / name
    deadline = time.monotonic() + 60
    # wait until some snapshots are on disk
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > 20_000:
            return proc
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the recorder wrote nothing")


def test_kill_9_leaves_a_readable_record(tmp_path):
    proc = _start_long_recording(tmp_path, "k.data")
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    rec = read_record(tmp_path / "k.data")
    assert not rec.complete and rec.nr_snapshots > 5
    # every snapshot read is whole and consecutive
    assert (rec.snap_end_us[1:] > rec.snap_end_us[:-1]).all()
    assert rec.region_offsets[-1] == rec.nr_regions_total
    # and every report works on it
    for rtype in ("wss", "heatmap", "access", "nr_regions"):
        pydamon("report", rtype, "-i", "k.data", cwd=tmp_path)
    assert "NOT finalized" in pydamon("report", "info", "-i", "k.data", cwd=tmp_path).stdout


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(tmp_path, sig):
    proc = _start_long_recording(tmp_path, "t.data")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    rec = read_record(tmp_path / "t.data")
    assert rec.complete and rec.nr_snapshots > 5
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_record_bad_input(tmp_path):
    assert_one_line_error(pydamon("record", "-p", "999999", check=False), 2, "999999")
    assert_one_line_error(pydamon("record", "--sim", "nosuch", check=False), 2, "unknown workload")
    assert_one_line_error(
        pydamon("record", "--sim", "hotcold", "-s", "200ms", "-a", "100ms", check=False),
        2, "sample interval",
    )  # fmt: skip
    assert_one_line_error(pydamon("record", check=False), 2, "nothing to monitor")
    assert_one_line_error(
        pydamon("record", "--sim", "hotcold", "-o", str(tmp_path), check=False), 2, "directory"
    )
    assert_one_line_error(
        pydamon("record", "--sim", "hotcold", "--regions", "9-3", check=False), 2, "range"
    )
    bad = pydamon("record", "--sim", "hotcold", "-s", "fast", check=False)
    assert (
        bad.returncode == 2
        and "Traceback" not in bad.stderr
        and "'fast' is not a duration" in bad.stderr
    )
