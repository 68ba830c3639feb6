"""The CLI and the modules on the guest kernel's DAMON (``--backend kernel|auto``): records of the
workload, two pydamon kdamonds at once, a hand-made kdamond left alone, the orphan kdamond of a
``kill -9``, and reclaim on a pydamon-owned kdamond.

They write the guest kernel's DAMON sysfs, so they run only inside the test guest (default 6.12;
``PYDAMON_GUEST_KERNEL=.../bzImage-6.1`` for 6.1).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from realmem import WorkloadProcess, read_sysfs, wait_for
from test_cli_guest import mean_rate
from test_damo_interop import damo_command
from test_modules_guest import page_states, watching

from pydamon.core import Attrs, Snapshot
from pydamon.core.attrs import IntervalsGoal
from pydamon.core.tuning import intervals_score_bp
from pydamon.modules.reclaim import ReclaimModule
from pydamon.modules.runner import ModuleRunner
from pydamon.record import read_record
from pydamon.report import percentiles_of, wss_bytes

pytestmark = [pytest.mark.guest, pytest.mark.changes_system]

ADMIN = "/sys/kernel/mm/damon/admin"
TRACEFS = "/sys/kernel/tracing"
PYDAMON = [sys.executable, "-m", "pydamon.cli.main"]
#: Generous intervals: the guest is emulated.
ATTRS = ["-s", "50ms", "-a", "1s", "--monitoring_nr_regions_range", "10", "100"]
MiB = 1 << 20


def read(path: str) -> str:
    return read_sysfs(path).strip()


def write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def nr_kdamonds() -> int:
    return int(read(f"{ADMIN}/kdamonds/nr_kdamonds"))


def states() -> list[str]:
    return [read(f"{ADMIN}/kdamonds/{k}/state") for k in range(nr_kdamonds())]


def our_instances() -> list[str]:
    return [n for n in os.listdir(f"{TRACEFS}/instances") if n.startswith("pydamon-")]


def sysfs_files() -> dict[str, str]:
    """Every file of the DAMON sysfs tree and what reading it gives."""
    out = {}
    for d, _dirs, files in os.walk(ADMIN):
        for name in files:
            path = os.path.join(d, name)
            try:
                out[path] = read(path)
            except OSError as err:
                out[path] = f"<{err.strerror}>"
    return out


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    if nr_kdamonds():
        pytest.skip("the guest's kernel DAMON already has kdamonds")
    monkeypatch.setenv("PYDAMON_RUN_DIR", str(tmp_path / "run"))  # the pool's record
    yield dict(os.environ)
    assert nr_kdamonds() == 0, "a kdamond was left behind"
    assert our_instances() == [], "a trace instance was left behind"


@pytest.fixture
def hotcold(workload) -> WorkloadProcess:
    return workload("hotcold", "--tick-ms", "10", size="64M")


def pydamon(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*PYDAMON, *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_kernel_record_finds_hot_keeps_cold_near_zero_and_damo_agrees(
    env, hotcold, tmp_path
) -> None:
    out = str(tmp_path / "kernel.data")
    done = pydamon(env, "record", "--backend", "kernel", "-p", str(hotcold.pid), *ATTRS,
                   "--timeout", "15", "-o", out)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "pydamon: backend kernel: kernel DAMON at" in done.stderr
    rec = read_record(out)
    assert rec.meta["backend"] == "kernel" and "as asked" in rec.meta["backend_reason"]
    assert rec.complete and rec.nr_snapshots >= 8, rec.nr_snapshots
    settled = rec.nr_snapshots - 3
    hot = mean_rate(rec, *hotcold.areas["hot"], first=settled)
    cold = mean_rate(rec, *hotcold.areas["cold"], first=settled)
    assert cold <= 0.1 and hot > cold + 0.2, (hot, cold)
    # damo reads the same record and reports the same working set sizes
    cmd = damo_command()
    if cmd is None:
        pytest.skip("damo is not installed")
    exported = str(tmp_path / "damon.data")
    assert pydamon(env, "convert", out, "-o", exported).returncode == 0
    text = subprocess.run(
        [*cmd, "report", "wss", "-i", exported, "--raw_number", "--exclude_samples", "0",
         "--range", "0", "101", "25"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert text.returncode == 0, text.stderr
    rows = {}
    for line in text.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit() and fields[1].isdigit():
            rows[int(fields[0])] = int(fields[1])
    ours = dict(percentiles_of(wss_bytes(read_record(exported)), [0, 25, 50, 75, 100]))
    assert rows == ours, (text.stdout, ours)


def test_two_pydamon_kdamonds_at_once(env, workload, tmp_path) -> None:
    wls = [workload("hotcold", "--tick-ms", "10", size="32M") for _ in range(2)]
    procs = [
        subprocess.Popen(
            [
                *PYDAMON,
                "record",
                "--backend",
                "kernel",
                "-p",
                str(wl.pid),
                *ATTRS,
                "--timeout",
                "12",
                "-o",
                str(tmp_path / f"{i}.data"),
            ],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i, wl in enumerate(wls)
    ]
    try:
        assert wait_for(lambda: states().count("on") == 2, 60), states()
    finally:
        errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    for i, wl in enumerate(wls):
        rec = read_record(tmp_path / f"{i}.data")
        assert rec.meta["backend"] == "kernel" and rec.nr_snapshots >= 3
        assert rec.targets[0].pid == wl.pid


def test_a_hand_made_kdamond_is_left_exactly_as_it_was(env, hotcold, tmp_path) -> None:
    write(f"{ADMIN}/kdamonds/nr_kdamonds", "1")
    try:
        kd = f"{ADMIN}/kdamonds/0"
        write(f"{kd}/contexts/nr_contexts", "1")
        write(f"{kd}/contexts/0/operations", "vaddr")
        write(f"{kd}/contexts/0/targets/nr_targets", "1")
        write(f"{kd}/contexts/0/targets/0/pid_target", str(hotcold.pid))
        before = sysfs_files()
        out = str(tmp_path / "auto.data")
        auto = pydamon(env, "record", "-p", str(hotcold.pid), *ATTRS, "--timeout", "4", "-o", out)
        assert auto.returncode == 0, auto.stderr
        line = auto.stderr.strip().splitlines()[0]
        assert line.startswith("pydamon: backend user: user-space engine: kdamond(s) 0 at"), line
        assert "not created by pydamon" in line
        assert read_record(out).meta["backend"] == "user"
        refused = pydamon(env, "record", "--backend", "kernel", "-p", str(hotcold.pid), *ATTRS,
                          "--timeout", "4", "-o", str(tmp_path / "k.data"))  # fmt: skip
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
        assert "did not create" in refused.stderr.strip().splitlines()[-1], refused.stderr
        assert "kdamond" not in pydamon(env, "status").stdout
        assert sysfs_files() == before
    finally:
        write(f"{ADMIN}/kdamonds/nr_kdamonds", "0")


def test_kill_9_of_a_record_leaves_an_orphan_that_status_shows_and_stop_ends(
    env, hotcold, tmp_path
) -> None:
    proc = subprocess.Popen(
        [*PYDAMON, "record", "--backend", "kernel", "-p", str(hotcold.pid), *ATTRS,
         "--timeout", "300", "-o", str(tmp_path / "killed.data")],
        env=env, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert wait_for(lambda: "on" in states(), 60), states()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert "on" in states()  # nobody turned it off
    status = pydamon(env, "status")
    assert status.returncode == 0, status.stderr
    assert f"orphan (its pydamon, pid {proc.pid}, is gone), state on" in status.stdout
    slots = json.loads(pydamon(env, "status", "--json").stdout)
    assert [s["kdamond"] for s in slots if s.get("orphan")] == [0]
    stop = pydamon(env, "stop")
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout.startswith(f"stopped orphan kdamond 0 at {ADMIN}"), stop.stdout
    time.sleep(0.2)
    assert nr_kdamonds() == 0
    assert "kdamond" not in pydamon(env, "status").stdout


def test_reclaim_module_on_a_pydamon_kdamond(env, zram_swap, workload) -> None:
    wl = workload("hotcold", "--tick-ms", "50", size="64M")
    cold = wl.areas["cold"]
    module = ReclaimModule(
        backend="kernel",
        **watching(wl),
        min_age="3s",
        quota_sz=8 * MiB,
        quota_ms=0,
        wmarks_interval="1s",
        wmarks_high=1000,  # active while free memory is below 100%
        wmarks_mid=999,
        wmarks_low=0,
    )
    runner = ModuleRunner(module)
    runner.start()
    try:
        assert module.backend_used == "kernel", module.backend_reason
        assert wait_for(lambda: "on" in states(), 60)

        def cold_swapped() -> bool:
            return page_states(wl.pid, *cold)["swapped"] >= 0.4 * (cold[1] - cold[0])

        assert wait_for(cold_swapped, 90), (module.stats(), page_states(wl.pid, *cold))
        assert wait_for(lambda: module.stats().get("bytes_reclaimed_regions", 0) > 0, 30)
        stats = module.stats()
        status = runner.status()
    finally:
        runner.close()
    assert stats["active"] is True and stats["nr_reclaimed_regions"] > 0, stats
    assert stats["bytes_reclaim_tried_regions"] >= stats["bytes_reclaimed_regions"]
    # the module's monitor_region_start/end are fixed ranges of the process: fvaddr
    assert status["backend"] == "kernel" and status["contexts"][0]["ops"] == "fvaddr"


def test_intervals_tuning_emulated_on_a_kernel_without_it(env, hotcold, tmp_path) -> None:
    """6.12 and 6.1 have no intervals_goal (6.15): pydamon tunes from the snapshots and commits.
    A goal of 50% of the most access events is far more than the workload shows at 20 ms (its
    hot area is a tenth of it), so the sampling interval must grow every 2 aggregations, within
    the goal's limits, and the access events per snapshot with it."""
    if os.path.exists(f"{ADMIN}/kdamonds/0/contexts/0/monitoring_attrs/intervals/intervals_goal"):
        pytest.skip("this kernel tunes the intervals itself")
    out = str(tmp_path / "tuned.data")
    done = pydamon(env, "record", "--backend", "kernel", "-p", str(hotcold.pid), "-s", "20ms",
                   "-a", "400ms", "--monitoring_nr_regions_range", "10", "100",
                   "--monitoring_intervals_goal", "5000", "2", "20ms", "2s",
                   "--timeout", "20", "-o", out, "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "pydamon runs on top: intervals auto-tuning" in done.stderr, done.stderr
    summary = json.loads(done.stdout)
    assert summary["achieved"]["emulated"] == ["intervals auto-tuning (native since 6.15)"]
    snaps = list(read_record(out).snapshots())
    intervals = [s.sample_interval_us for s in snaps]
    assert intervals[0] == 20_000 and intervals[-1] > 2 * intervals[0], intervals
    assert intervals == sorted(intervals) and intervals[-1] <= 2_000_000, intervals
    # each aggregation keeps its 20 samples
    assert all(s.aggr_interval_us == 20 * s.sample_interval_us for s in snaps)
    # toward the goal: the longer the sampling, the more of the warm area each sample sees
    goal = IntervalsGoal(access_bp=5000, aggrs=2, min_sample_us=20_000, max_sample_us=2_000_000)

    def score(s: Snapshot) -> int:
        attrs = Attrs(sample_interval_us=s.sample_interval_us, aggr_interval_us=s.aggr_interval_us,
                      intervals_goal=goal).with_aggr_samples()  # fmt: skip
        return intervals_score_bp(attrs, [(s.sizes, s.nr_accesses)])

    first, last = [score(s) for s in snaps[1:3]], [score(s) for s in snaps[-2:]]
    assert max(first) < 10_000 and min(last) > max(first), (first, last)
