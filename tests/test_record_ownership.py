"""Record files are owned: one writer at a time (a lock naming the holder), and an existing
record is kept as ``.old`` unless ``--force`` (issue 12, findings 2 and 6)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pydamon.cli.main import main
from pydamon.record import RecordWriter, read_record
from pydamon.record.ownership import RecordBusy

PYDAMON = [sys.executable, "-m", "pydamon.cli.main"]


def test_a_second_writer_of_one_file_is_refused_naming_the_holder(tmp_path):
    path = str(tmp_path / "same.data")
    first = RecordWriter(path, {"targets": []}, holder="pydamon start A")
    with pytest.raises(RecordBusy) as err:
        RecordWriter(path, {"targets": []})
    assert f"pid {os.getpid()} (pydamon start A)" in str(err.value)
    assert "\n" not in str(err.value)
    first.close()
    # the lock went with the writer: the file can be written again
    RecordWriter(path, {"targets": []}).close()
    assert not os.path.exists(path + ".lock")


def test_start_refuses_a_second_monitor_of_the_same_record(tmp_path):
    env = dict(os.environ, PYDAMON_RUN_DIR=str(tmp_path / "run"))

    def pydamon(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*PYDAMON, *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=120)  # fmt: skip

    a = pydamon("start", "--name", "A", "--sim", "hotcold", "-o", "same.data")
    assert a.returncode == 0, a.stderr
    try:
        b = pydamon("start", "--name", "B", "--sim", "hotcold", "-o", "same.data")
        assert b.returncode == 1
        lines = b.stderr.strip().splitlines()
        assert len(lines) == 1 and "being written by" in lines[0] and "pydamon start A" in lines[0]
        assert "Traceback" not in b.stderr
    finally:
        stop = pydamon("stop", "A")
    assert stop.returncode == 0, stop.stderr
    # A's record survived B's attempt whole
    rec = read_record(tmp_path / "same.data")
    assert rec.complete and rec.nr_snapshots > 0


def test_record_keeps_an_existing_output_as_old_unless_forced(tmp_path, capsys):
    out = str(tmp_path / "rec.data")
    args = ["record", "--sim", "hotcold", "-q", "-o", out]
    assert main([*args, "--timeout", "1"]) == 0
    first = read_record(out).nr_snapshots
    assert main([*args, "--timeout", "2"]) == 0
    assert read_record(out + ".old").nr_snapshots == first
    second = read_record(out).nr_snapshots
    assert second > first
    assert main([*args, "--timeout", "1", "--force"]) == 0
    # forced: overwritten, the .old left as it was
    assert read_record(out + ".old").nr_snapshots == first
    assert read_record(out).nr_snapshots == first
    assert not os.path.exists(out + ".lock")
