"""Records carry what each aggregation achieved: its real sample count and measured mean access
window (per snapshot), the CPU budget and the achieved intervals (metadata); records written
before these existed read them as UNKNOWN. And ``--cpu-budget``'s bad values are one-line errors.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from pydamon.record import blocks, columnar, read_record
from pydamon.record.model import UNKNOWN
from test_cli_record import assert_one_line_error, pydamon


def test_a_record_carries_the_real_sample_counts_and_windows(tmp_path):
    out = tmp_path / "r.data"
    res = pydamon(
        "record", "--sim", "hotcold", "--timeout", "2", "-s", "10ms", "-a", "100ms",
        "--cpu-budget", "0", "-o", str(out), "--json",
    )  # fmt: skip
    rec = read_record(str(out))
    assert rec.nr_snapshots >= 19
    # a virtual clock: every aggregation took its 10 samples of exactly 10 ms windows
    assert rec.snap_nr_samples.tolist() == [10] * rec.nr_snapshots
    assert rec.snap_window_us.tolist() == [10_000] * rec.nr_snapshots
    snap = rec.snapshot(3)
    assert (snap.nr_samples, snap.mean_window_us) == (10, 10_000)
    assert rec.meta["cpu_budget_percent"] == 0.0
    summary = json.loads(res.stdout)
    assert summary["achieved"]["nr_samples"] == 10 * rec.nr_snapshots
    assert summary["achieved"]["cpu_budget"] is None


def test_records_without_the_columns_read_them_as_unknown(tmp_path, monkeypatch):
    # an older writer: no optional columns in the file
    from pydamon.core.snapshot import Snapshot
    from pydamon.record import write_record
    from pydamon.record.model import Record

    snaps = [
        Snapshot(0, 1, i * 100, i * 100 + 100, 5, 100, np.array([0, 4096]),
                 np.array([4096, 8192]), np.array([1, 2]), np.array([0, 1]), 20, 5)
        for i in range(3)
    ]  # fmt: skip
    rec = Record.from_snapshots(snaps)
    monkeypatch.setattr(columnar, "OPTIONAL_SNAP_COLUMNS", ())
    monkeypatch.setattr(columnar, "ALL_COLUMNS", columnar.REQUIRED_COLUMNS)
    write_record(str(tmp_path / "old.data"), rec)
    monkeypatch.undo()
    write_record(str(tmp_path / "new.data"), rec)
    old, new = read_record(str(tmp_path / "old.data")), read_record(str(tmp_path / "new.data"))
    assert old.snap_nr_samples.tolist() == [UNKNOWN] * 3
    assert old.snapshot(0).mean_window_us == UNKNOWN
    assert new.snap_nr_samples.tolist() == [20] * 3 and new.snap_window_us.tolist() == [5] * 3

    # and a version 1 block without them
    payload = blocks.encode_block(rec)
    n, m, flags, nr_columns, res = struct.unpack_from("<IQBBH", payload, 0)
    pos = struct.calcsize("<IQBBH")
    for _ in range(nr_columns - 2):
        pos += struct.calcsize("<BBBBI") + struct.unpack_from("<BBBBI", payload, pos)[4]
    old_block = (
        struct.pack("<IQBBH", n, m, flags, nr_columns - 2, res)
        + payload[struct.calcsize("<IQBBH") : pos]
    )
    decoded = blocks.decode_block(memoryview(old_block), {}, rec.targets)
    assert decoded.snap_nr_samples.tolist() == [UNKNOWN] * 3
    assert (
        blocks.decode_block(memoryview(payload), {}, rec.targets).snap_window_us.tolist() == [5] * 3
    )


@pytest.mark.parametrize(
    "value, words",
    [("abc", ["--cpu-budget", "per cent"]), ("-5", ["0 (no budget) to 100"]),
     ("150%", ["0 (no budget) to 100"]), ("nan", ["0 (no budget) to 100"])],
)  # fmt: skip
def test_bad_cpu_budgets_are_one_line_errors(value, words):
    out = pydamon("record", "--sim", "hotcold", f"--cpu-budget={value}", check=False)
    assert_one_line_error(out, 2, *words)


def test_module_runner_takes_a_cpu_budget():
    out = pydamon("module", "run", "stat", "--cpu-budget", "x", check=False)
    assert_one_line_error(out, 2, "per cent")
