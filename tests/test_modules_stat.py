"""The ``stat`` module (DAMON_STAT): numbers, a hot/cold simulated workload, the endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from pydamon.modules import ParamError
from pydamon.modules.runner import ModuleRunner
from pydamon.modules.stat import (
    StatModule,
    estimated_memory_bandwidth,
    idle_ms_percentiles,
    idle_time_ms,
)

MAIN = "import sys; from pydamon.cli.main import main; sys.exit(main(sys.argv[1:]))"
MiB = 1 << 20


def test_numbers_by_hand() -> None:
    sizes = np.array([10 * MiB, 30 * MiB, 60 * MiB])
    nr_accesses = np.array([20, 0, 0])
    age = np.array([5, 3, 100])
    aggr_us = 200_000
    # 10 MiB seen accessed at 20 samples per 0.2 s aggregation
    assert estimated_memory_bandwidth(sizes, nr_accesses, aggr_us) == 10 * MiB * 20 * 5
    idle = idle_time_ms(nr_accesses, age, aggr_us)
    assert idle.tolist() == [-1000, 600, 20_000]
    pct = idle_ms_percentiles(sizes, idle)
    assert len(pct) == 101
    # bytes sorted by idle time: 10% at -1000 ms, 30% at 600 ms, 60% at 20 s
    assert pct[0] == pct[10] == -1000
    assert pct[11] == pct[40] == 600
    assert pct[41] == pct[100] == 20_000


def test_cold_bytes_at_high_idle_times_on_sim() -> None:
    module = StatModule(ops="sim", workload="hotcold", seed=3, refresh_interval_ms=1000)
    runner = ModuleRunner(module, duration_s=60)
    runner.start()
    assert runner.wait(60)
    stats = module.stats()
    runner.close()
    pct = stats["memory_idle_ms_percentiles"]
    # hotcold: 60% cold (never accessed), the rest hot/warm/stack (accessed all the time)
    assert pct[0] < 0, "the hot area was seen accessed"
    assert pct[45] >= 50_000, "the cold 60% of the bytes are idle for most of the 60 s"
    assert pct[100] <= 60_000
    assert max(pct[:30]) <= 5_000, "the hot/warm bytes are not idle"
    assert stats["estimated_memory_bandwidth"] > 0
    assert stats["monitored_bytes"] > 900 * MiB


def test_prometheus_endpoint_over_loopback() -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from prometheus_client.parser import text_string_to_metric_families

    module = StatModule(ops="sim", workload="hotcold", seed=1, metrics_port=0)
    runner = ModuleRunner(module, duration_s=20)
    runner.start()
    try:
        assert runner.wait(60)
        stats = module.stats()
        url = module.metrics_url
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200
            text = resp.read().decode()
    finally:
        runner.close()
    assert prometheus_client is not None
    families = {f.name: f for f in text_string_to_metric_families(text)}
    bw = families["pydamon_stat_estimated_memory_bandwidth_bytes_per_second"]
    assert bw.samples[0].value == stats["estimated_memory_bandwidth"]
    idle = {
        s.labels["percentile"]: s.value for s in families["pydamon_stat_memory_idle_ms"].samples
    }
    assert len(idle) == 101
    assert idle["50"] == stats["memory_idle_ms_percentiles"][50]
    assert families["pydamon_stat_aggr_interval_us"].samples[0].value == stats["aggr_interval_us"]
    # the server is gone after the module closed
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


def test_bad_params() -> None:
    with pytest.raises(ParamError, match="parameter workload: unknown workload 'nope'"):
        StatModule(ops="sim", workload="nope").build()
    with pytest.raises(ParamError, match="parameter metrics_port: 70000 is above 65535"):
        StatModule(metrics_port=70000)
    with pytest.raises(ParamError, match="exactly one of --pid or --cgroup"):
        StatModule(ops="vaddr")


def test_cli_text_and_json(tmp_path) -> None:
    env = dict(os.environ, PYDAMON_RUN_DIR=str(tmp_path))
    base = [sys.executable, "-c", MAIN, "module", "run", "stat", "--ops", "sim", "--duration"]
    r = subprocess.run(
        base + ["15", "--format", "json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert r.returncode == 0, r.stderr
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(last["stats"]["memory_idle_ms_percentiles"]) == 101
    assert last["params"]["ops"] == "sim"
    start = time.monotonic()
    r = subprocess.run(base + ["15"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "estimated_memory_bandwidth:" in r.stdout
    assert "memory_idle_ms_percentiles: p0=" in r.stdout
    assert time.monotonic() - start < 60
