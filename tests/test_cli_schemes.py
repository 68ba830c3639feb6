"""``pydamon schemes`` end to end on a simulated workload (subprocess, as typed)."""

from __future__ import annotations

import json
import subprocess
import sys

from pydamon.record import read_record

PYDAMON = [sys.executable, "-m", "pydamon.cli.main"]


def pydamon(*args: str, cwd=None, check: bool = True):
    out = subprocess.run([*PYDAMON, *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_pageout_cold_memory_from_options_and_file(tmp_path):
    out = pydamon("schemes", "--sim", "hotcold", "--sim_size", "256M", "--seed", "2",
                  "--damos_action", "pageout", "--damos_access_rate", "0", "0",
                  "--damos_age", "2s", "max", "--timeout", "8", "--json")  # fmt: skip
    rows = json.loads(out.stdout)["schemes"]
    assert rows[0]["action"] == "pageout" and rows[0]["sz_applied"] > 0
    # the same scheme in damo's text form, plus a record of the run
    (tmp_path / "s.txt").write_text("# cold pages out\nmin max 0% 0% 2s max pageout\n")
    out = pydamon("schemes", "--sim", "hotcold", "--sim_size", "256M", "--seed", "2",
                  "--schemes", "s.txt", "--timeout", "8", "--json", "-o", "s.data",
                  cwd=tmp_path)  # fmt: skip
    assert json.loads(out.stdout)["schemes"] == rows
    assert read_record(tmp_path / "s.data").nr_snapshots == 80
    # a quota caps what is applied per reset interval
    out = pydamon("schemes", "--sim", "hotcold", "--sim_size", "256M", "--seed", "2",
                  "--damos_action", "pageout", "--damos_access_rate", "0", "0",
                  "--damos_quotas", "0", "4M", "1s", "--timeout", "8", "--json")  # fmt: skip
    capped = json.loads(out.stdout)["schemes"][0]
    assert 0 < capped["sz_applied"] <= 8 * 4 * 2**20 and capped["qt_exceeds"] > 0


def test_schemes_bad_input(tmp_path):
    (tmp_path / "bad.txt").write_text("1 2 3\n")
    # a wrong command line is a usage error (2), a bad or missing file bad input (1)
    for argv, words, code in (
        (["--sim", "hotcold"], "no scheme", 2),
        (["--sim", "hotcold", "--damos_action", "explode"], "unknown action", 2),
        (["--sim", "hotcold", "--schemes", "bad.txt"], "bad scheme file", 1),
        (["--sim", "hotcold", "--schemes", "none.txt"], "no such scheme file", 1),
    ):
        res = pydamon("schemes", *argv, cwd=tmp_path, check=False)
        assert res.returncode == code and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and words in res.stderr, res.stderr
