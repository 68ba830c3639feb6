"""``--backend`` and ``--damon-root`` of the CLI, on fake DAMON trees under tmp_path
(tests/kernel_tree.py), never the host's sysfs. The guest tests (tests/guest/test_kernel_cli.py)
run the same commands on the real kernels."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernel_tree import LINUX_6_12, fake_kernel, tree_files
from pydamon.record import read_record
from test_backend import ORPHAN_SCRIPT, TESTS, hand_made_kdamond

PYDAMON = [sys.executable, "-m", "pydamon.cli.main"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, PYDAMON_RUN_DIR=str(tmp_path / "run"))


def pydamon(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PYDAMON, *args], capture_output=True, text=True, env=env, timeout=120)


def test_sim_records_say_which_backend_ran_them(tmp_path: Path, env: dict[str, str]) -> None:
    out = tmp_path / "sim.data"
    done = pydamon(env, "record", "--sim", "hotcold", "--timeout", "2", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert "backend" not in done.stderr  # no choice to tell about
    meta = read_record(out).meta
    assert meta["backend"] == "user" and "simulated" in meta["backend_reason"]
    bad = pydamon(env, "record", "--sim", "hotcold", "--backend", "kernel", "-o", str(out))
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert [line.split(": ", 2)[-1] for line in bad.stderr.strip().splitlines()] == [
        "--backend kernel: the sim operations set exists only in pydamon's user-space "
        "engine; use --backend user or auto"
    ]
    bad = pydamon(env, "record", "--sim", "hotcold", "--backend", "fast")
    assert bad.returncode == 2 and "invalid choice: 'fast'" in bad.stderr


def test_the_kernel_backend_refuses_a_hand_made_kdamond_and_changes_nothing(
    tmp_path: Path, env: dict[str, str]
) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_12)
    hand_made_kdamond(kernel)
    before = tree_files(kernel.root)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        args = ["record", "-p", str(sleeper.pid), "--timeout", "2", "-o", str(tmp_path / "x")]
        done = pydamon(env, *args, "--backend", "kernel", "--damon-root", str(kernel.root))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert done.returncode != 0 and "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "did not create" in lines[0], lines
    assert tree_files(kernel.root) == before


def test_status_finds_the_orphan_kdamond_and_stop_ends_it(
    tmp_path: Path, env: dict[str, str]
) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_12)
    done = subprocess.run(
        [sys.executable, "-c", ORPHAN_SCRIPT, str(TESTS), str(kernel.root)], env=env
    )
    assert done.returncode == 9  # the pydamon that owned kdamond 0 died without cleaning up
    root = ["--damon-root", str(kernel.root)]
    status = pydamon(env, "status", *root)
    assert status.returncode == 0, status.stderr
    assert "kdamond 0 at" in status.stdout and "orphan" in status.stdout
    assert "state on" in status.stdout and "'pydamon stop' ends it" in status.stdout
    assert "orphan" not in pydamon(env, "status", "--backend", "user", *root).stdout
    stop = pydamon(env, "stop", *root)
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout.startswith("stopped orphan kdamond 0 at")
    assert (kernel.root / "kdamonds/0/state").read_text().strip() == "off"
    assert (kernel.root / "kdamonds/nr_kdamonds").read_text().strip() == "0"
    again = pydamon(env, "status", *root)
    assert "kdamond" not in again.stdout
