"""``pydamon record``/``report`` on a real process, where page_idle works (the test guest).

Few process start-ups: under emulation each Python + numpy start costs seconds, so most calls
go through the CLI's ``main()`` in this process.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pydamon.cli.main import main
from pydamon.record import read_record

pytestmark = pytest.mark.guest


def mean_rate(rec, lo: int, hi: int, first: int) -> float:
    """Byte-weighted mean access rate of [lo, hi) over snapshots from ``first`` on."""
    keep = rec.region_snapshot >= first
    s = np.maximum(rec.starts, lo)
    e = np.minimum(rec.ends, hi)
    cover = np.where(keep & (e > s), e - s, 0)
    rate = rec.nr_accesses / rec.max_nr_accesses[rec.region_snapshot]
    return float((cover * rate).sum() / max(cover.sum(), 1))


def test_record_a_running_process_and_report(workload, tmp_path, capsys):
    wl = workload("hotcold", size="32M")
    path = str(tmp_path / "real.data")
    # 15 s: the adaptive regions need ~8-10 aggregations (one region covers all areas and
    # the libraries around them at first) before a region holds only hot or only cold pages
    # the user-space engine on real memory (the kernel backend: test_kernel_cli.py);
    # --cpu-budget 0: this tests what is recorded (hot found), not the budget's trade-off
    rc = main(["record", "--backend", "user", "-p", str(wl.pid), "-s", "50ms", "-a", "500ms",
               "--timeout", "15", "--cpu-budget", "0", "-o", path, "-q", "--json"])  # fmt: skip
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["stop_reason"] == "timeout" and summary["monitor_cpu_s"] > 0
    rec = read_record(path)
    # the monitor clock is real time; under emulation an aggregation may take longer
    assert rec.complete and rec.nr_snapshots >= 8 and rec.meta["ops"] == "vaddr"
    assert rec.targets[0].pid == wl.pid
    # the footprint of the real process was recorded with every snapshot
    assert (rec.rss_bytes > 16 << 20).all() and (rec.vsz_bytes >= rec.rss_bytes).all()
    assert (rec.sys_free_bytes > 0).all()
    hot, cold = wl.areas["hot"], wl.areas["cold"]
    # Judged once the regions settled (the last three aggregations): before that, regions
    # straddling the areas' edges give the never-accessed cold area its neighbours' rates and
    # the hot area that of the untouched libraries beside it (6 s runs read hot 0.06 vs cold
    # 0.14 in CI). Real sampling under emulation is noisy: ask that hot reads clearly hotter.
    settled = rec.nr_snapshots - 3
    hot_rate = mean_rate(rec, *hot, first=settled)
    cold_rate = mean_rate(rec, *cold, first=settled)
    assert hot_rate > cold_rate + 0.05 and hot_rate > 1.5 * cold_rate, (hot_rate, cold_rate)
    for rtype in ("wss", "access", "heatmap"):
        assert main(["report", rtype, "-i", path]) == 0, rtype
        assert capsys.readouterr().out.strip()
    fp = json.loads(_run_main(capsys, ["report", "footprints", "-i", path, "--json"]))
    assert fp[0]["rss_bytes"]["percentiles"]["50"] > 16 << 20


def _run_main(capsys, argv: list[str]) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


def test_record_a_command_until_it_exits(tmp_path):
    """As a user types it: the recorder starts the command and stops when it exits."""
    out = subprocess.run(
        [sys.executable, "-m", "pydamon.cli.main", "record", "--backend", "user", "-s", "50ms",
         "-a", "500ms", "--timeout", "120", "-o", "cmd.data", "--json", "--",
         sys.executable, "-m", "pydamon.workload", "hotcold", "--size", "16M",
         "--duration", "4", "--no-stdin"],
        capture_output=True, text=True, cwd=tmp_path, timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["stop_reason"].startswith("command exited")
    rec = read_record(tmp_path / "cmd.data")
    assert rec.complete and rec.nr_snapshots >= 3
    assert rec.meta["targets"][0]["name"].endswith("--no-stdin")
