"""The suite never runs a system-changing guest test natively on a host, even one with page_idle."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

TESTS = """
import pytest

pytestmark = pytest.mark.guest

def test_reads_only(tmp_path_factory):
    open({ran!r} + "/reads_only", "w").close()

@pytest.mark.changes_system
def test_makes_a_cgroup():
    open({ran!r} + "/makes_a_cgroup", "w").close()

@pytest.fixture
def zram_swap():
    return None

def test_turns_swap_on(zram_swap):
    open({ran!r} + "/turns_swap_on", "w").close()
"""


def test_system_changing_guest_tests_skip_natively_without_the_guest(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    ran.mkdir()
    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copy(HERE / "conftest.py", suite / "conftest.py")
    (suite / "test_fake_guest.py").write_text(TESTS.format(ran=str(ran)))
    bitmap = tmp_path / "bitmap"  # stands for a usable page_idle bitmap on this "host"
    bitmap.write_bytes(b"\0" * 8)
    env = {
        "PATH": "/usr/bin:/bin",
        "PYDAMON_PAGE_IDLE_BITMAP": str(bitmap),
        "PYDAMON_TESTBED": str(tmp_path / "no-testbed"),
    }
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(suite)],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert sorted(p.name for p in ran.iterdir()) == ["reads_only"]  # natively: only this one
    assert out.stdout.count("runs only inside the test guest") == 2, out.stdout
