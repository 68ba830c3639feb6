"""damo reads pydamon's records: ``damo report heatmap/wss/access`` on an exported record.

damo runs only here, in the test guest (it probes the kernel's DAMON sysfs). It is taken from
``$PYDAMON_DAMO`` (a directory holding damo's package, as ``pip install --target DIR damo``
makes), else ``~/.cache/pydamon-damo``, else a ``damo`` on PATH. The guest has no network: the
package is installed on the host beforehand (``pip install --target ~/.cache/pydamon-damo damo``,
which only copies files; nothing of damo runs on the host).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest

from pydamon.cli.main import main
from pydamon.record import read_record
from pydamon.report import percentiles_of, wss_bytes

# damo writes the kernel's DAMON sysfs: never on a host, whose kdamond is not ours
pytestmark = [pytest.mark.guest, pytest.mark.changes_system]


def damo_command() -> list[str] | None:
    for base in (os.environ.get("PYDAMON_DAMO"), os.path.expanduser("~/.cache/pydamon-damo")):
        if base and os.path.isfile(os.path.join(base, "damo", "damo.py")):
            return [sys.executable, "-c",
                    f"import sys; sys.path.insert(0, {base!r}); from damo.damo import main; "
                    "sys.argv[0] = 'damo'; sys.exit(main())"]  # fmt: skip
    if importlib.util.find_spec("damo") is not None:  # the test extra installs it
        run_damo = "import sys; from damo.damo import main; sys.argv[0] = 'damo'; sys.exit(main())"
        return [sys.executable, "-c", run_damo]
    if shutil.which("damo"):
        return ["damo"]
    return None


@pytest.fixture(scope="module")
def damo() -> list[str]:
    cmd = damo_command()
    if cmd is None:
        pytest.skip("damo is not installed: pip install -e '.[test]' installs it")
    if not shutil.which("file"):
        pytest.skip("damo needs the 'file' command to detect record formats")
    return cmd


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("damo")
    data = str(d / "pydamon.data")
    assert main(["record", "--sim", "stairs", "--sim_size", "64M", "--timeout", "3",
                 "--seed", "5", "-o", data, "-q"]) == 0  # fmt: skip
    out = str(d / "damon.data")
    assert main(["convert", data, "-o", out]) == 0
    return out


def run_damo(damo: list[str], *args: str) -> str:
    out = subprocess.run([*damo, *args], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (args, out.stdout[-2000:], out.stderr[-2000:])
    return out.stdout


def test_damo_report_wss_matches_pydamon(damo, exported):
    text = run_damo(damo, "report", "wss", "-i", exported, "--raw_number",
                    "--exclude_samples", "0", "--range", "0", "101", "25")  # fmt: skip
    rows = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit() and fields[1].isdigit():
            rows[int(fields[0])] = int(fields[1])
    assert set(rows) == {0, 25, 50, 75, 100}, text
    rec = read_record(exported)
    ours = dict(percentiles_of(wss_bytes(rec), [0, 25, 50, 75, 100]))
    assert rows == ours, (text, ours)


def test_damo_report_heatmap_and_access(damo, exported):
    heat = re.sub(r"\x1b\[[0-9;]*m", "", run_damo(damo, "report", "heatmap", "-i", exported))
    digits = [line for line in heat.splitlines() if line and not line.startswith("#")]
    assert digits and all(set(line) <= set("0123456789 ") for line in digits), heat[:2000]
    assert len({c for line in digits for c in line if c.isdigit()}) > 1  # hot and cold differ
    access = run_damo(damo, "report", "access", "-i", exported)
    # damo shows the record's first snapshot: its total size is the one pydamon recorded
    rec = read_record(exported)
    line = next(x for x in access.splitlines() if x.startswith("total size:"))
    value, unit = line.split(":", 1)[1].split()
    scale = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[unit]
    assert abs(float(value) * scale - rec.snapshot(0).total_bytes) <= 0.001 * scale, line
    assert "snapshot time:" in access and "heatmap:" in access
