"""``pydamon start/stop/status/tune`` and ``report access --live`` (subprocess, as typed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from pydamon.record import read_record

PYDAMON = [sys.executable, "-m", "pydamon.cli.main"]


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ)
    e["PYDAMON_RUN_DIR"] = str(tmp_path / "run")
    return e


def pydamon(env, *args: str, cwd=None, check: bool = True):
    out = subprocess.run(
        [*PYDAMON, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_start_status_tune_live_access_stop(tmp_path, env):
    started = pydamon(env, "start", "--sim", "hotcold", "--sim_speed", "20", "-a", "100ms",
                      "--json", cwd=tmp_path)  # fmt: skip
    info = json.loads(started.stdout)
    assert info["name"] == "sim-hotcold"
    try:
        # one instance per target
        again = pydamon(env, "start", "--sim", "hotcold", cwd=tmp_path, check=False)
        assert again.returncode == 2 and "already monitored" in again.stderr
        time.sleep(1.0)
        status = json.loads(pydamon(env, "status", "--json").stdout)
        assert len(status) == 1 and status[0]["running"] and status[0]["nr_snapshots"] > 0
        assert status[0]["attrs"]["aggr_interval_us"] == 100_000
        # the working set of the latest snapshot, from pydamon.report.wss
        assert 0 < status[0]["wss_bytes"] < status[0]["total_bytes"]
        # status is read from a file: the monitor refreshed it within the last aggregations
        assert time.time() - status[0]["updated_unix"] < 5
        live = json.loads(pydamon(env, "report", "access", "--live", "--json").stdout)
        assert live["regions"] and live["total_bytes"] > 0
        user = pydamon(env, "report", "access", "--live", "--backend", "user", "--json")
        assert json.loads(user.stdout)["regions"]  # the sim monitor runs on the user engine
        kernel = pydamon(env, "report", "access", "--live", "--backend", "kernel", check=False)
        assert kernel.returncode == 2 and kernel.stderr.strip().endswith(
            "no running background monitor on the kernel backend; see 'pydamon status'"
        ), kernel.stderr
        text = pydamon(env, "status").stdout
        assert "sim-hotcold: running" in text
        tuned = pydamon(env, "tune", "-s", "10ms", "-a", "400ms")
        assert "tuned sim-hotcold" in tuned.stdout
        status = json.loads(pydamon(env, "status", "sim-hotcold", "--json").stdout)
        assert status[0]["attrs"]["sample_interval_us"] == 10_000
        assert status[0]["attrs"]["aggr_interval_us"] == 400_000
        bad = pydamon(env, "tune", "-s", "1s", "-a", "100ms", check=False)
        assert bad.returncode == 2 and "sample interval" in bad.stderr
    finally:
        stopped = pydamon(env, "stop", check=False)
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped sim-hotcold" in stopped.stdout
    rec = read_record(info["record"])
    assert rec.complete and rec.nr_snapshots > 5
    assert {100_000, 400_000} <= set(rec.snap_aggr_us.tolist())
    assert "no background monitors" in pydamon(env, "status").stdout


def test_status_of_a_killed_monitor_and_errors(tmp_path, env):
    info = json.loads(pydamon(env, "start", "--sim", "zigzag", "--sim_speed", "5", "--json",
                              cwd=tmp_path).stdout)  # fmt: skip
    os.kill(info["pid"], 9)
    time.sleep(0.2)
    status = json.loads(pydamon(env, "status", "--json").stdout)
    assert status[0]["running"] is False and "dead" in status[0]["state"]
    # the killed monitor's record is readable up to its last snapshot
    assert read_record(info["record"]).complete is False
    out = pydamon(env, "stop")
    assert "was not running" in out.stdout
    for argv, words in (
        (["stop"], "no background monitor"),
        (["tune", "-s", "10ms"], "no background monitor"),
        (["stop", "nosuch"], "no monitor named"),
        (["report", "access", "--live"], "no running background monitor"),
        (["start", "-p", "999999"], "no process with pid 999999"),
    ):
        res = pydamon(env, *argv, check=False, cwd=tmp_path)
        assert res.returncode != 0 and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and words in res.stderr, res.stderr


def test_status_shows_the_achieved_intervals_cpu_per_sample_and_the_budget(tmp_path, env):
    pydamon(env, "start", "--sim", "hotcold", "--sim_speed", "20", "-a", "100ms",
            "--cpu-budget", "100", cwd=tmp_path)  # fmt: skip
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            status = json.loads(pydamon(env, "status", "--json").stdout)
            done = status[0].get("achieved") or {}
            if done.get("last_nr_samples", -1) > 0:
                break
            time.sleep(0.3)
        assert done["last_nr_samples"] == 20  # 100 ms of 5 ms samples, on the sim's clock
        assert done["last_mean_access_window_us"] == 5_000
        assert done["cpu_per_sample_us"] > 0 and done["cpu_per_region_sample_us"] > 0
        # (a budget of one whole CPU, which this simulation never needs to stretch for)
        assert done["cpu_budget"]["cpu_budget_percent"] == 100
        assert done["cpu_budget"]["stretch"] == 1
        text = pydamon(env, "status").stdout
        assert "achieved: sampling 5.000 ms, mean access window 5.000 ms" in text
        assert "us per region-sample" in text and "CPU budget 100%" in text
    finally:
        pydamon(env, "stop", check=False)
