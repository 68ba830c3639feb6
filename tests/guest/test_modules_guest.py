"""The reclaim and thp modules on real memory (the workload program, vaddr, zram swap).

Uses the ``workload`` fixture of tests/guest/conftest.py.

Runs where page_idle works (the test guest); see docs/testing.md. Each test runs the module
through the CLI (``pydamon module run ... --duration``) against a live workload process.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from typing import Any

import pytest

pytestmark = pytest.mark.guest

MAIN = "import sys; from pydamon.cli.main import main; sys.exit(main(sys.argv[1:]))"
PAGE = 4096
MiB = 1 << 20
KPF_THP = 22


@pytest.fixture(scope="module")
def zram_swap() -> None:
    """A zram swap device (the guest has no other swap)."""
    if "zram" in open("/proc/swaps").read():
        return
    if not os.path.exists("/sys/block/zram0/disksize"):
        pytest.skip("no zram device (kernel without CONFIG_ZRAM)")
    with open("/sys/block/zram0/disksize", "w") as f:
        f.write(str(512 * MiB))
    subprocess.run(["mkswap", "/dev/zram0"], check=True, capture_output=True)
    subprocess.run(["swapon", "/dev/zram0"], check=True, capture_output=True)


def page_states(pid: int, start: int, end: int) -> dict[str, int]:
    """Bytes of [start, end) present, swapped, and in THPs (pagemap + kpageflags, as root)."""
    nr = (end - start) // PAGE
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(start // PAGE * 8)
        entries = struct.unpack(f"<{nr}Q", f.read(nr * 8))
    present = [e for e in entries if e >> 63 & 1]
    swapped = sum(1 for e in entries if e >> 62 & 1)
    thp_pages = 0
    with open("/proc/kpageflags", "rb") as kf:
        # one check per 2 MiB-aligned huge page candidate (its first page), counted as 512 pages
        first = (start + (2 * MiB - 1)) // (2 * MiB) * (2 * MiB)
        for addr in range(first, end - 2 * MiB + 1, 2 * MiB):
            entry = entries[(addr - start) // PAGE]
            if entry >> 63 & 1:
                kf.seek((entry & ((1 << 55) - 1)) * 8)
                if struct.unpack("<Q", kf.read(8))[0] >> KPF_THP & 1:
                    thp_pages += 512
    return {"present": len(present) * PAGE, "swapped": swapped * PAGE, "thp": thp_pages * PAGE}


def run_module(tmp_path: Any, *args: str, timeout: float = 240) -> dict[str, Any]:
    r = subprocess.run(
        [sys.executable, "-c", MAIN, "module", "run", *args, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYDAMON_RUN_DIR=str(tmp_path)),
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


MONITORING = ("--sample-interval", "50ms", "--aggr-interval", "1s", "--min-nr-regions", "10")
ALWAYS_ON = ("--wmarks-high", "1000", "--wmarks-mid", "999", "--wmarks-low", "0")


def test_reclaim_pages_out_the_cold_area_within_quota(zram_swap, workload, tmp_path) -> None:
    wl = workload("hotcold", "--tick-ms", "50", size="64M")
    cold = wl.areas["cold"]
    hot = wl.areas["hot"]
    before = page_states(wl.pid, *cold)
    assert before["present"] >= 0.95 * (cold[1] - cold[0])
    quota = 8 * MiB
    duration_s = 16
    # monitor it as the only process of a cgroup (one target per process of cgroup.procs)
    cgroup = "/sys/fs/cgroup/pydamon-test-reclaim"
    os.makedirs(cgroup, exist_ok=True)
    with open(f"{cgroup}/cgroup.procs", "w") as f:
        f.write(str(wl.pid))
    status = run_module(
        tmp_path,
        "reclaim",
        "--ops", "vaddr", "--cgroup", cgroup,
        "--min-age", "4s", "--quota-sz", str(quota), "--quota-ms", "0",
        "--wmarks-interval", "1s", *ALWAYS_ON, *MONITORING,
        "--duration", str(duration_s),
    )  # fmt: skip
    stats = status["stats"]
    after_cold = page_states(wl.pid, *cold)
    after_hot = page_states(wl.pid, *hot)
    cold_size = cold[1] - cold[0]
    # the cold area went to swap...
    assert after_cold["swapped"] >= 0.3 * cold_size, (stats, after_cold)
    # ...no faster than the quota allows (one window per second after min_age)
    assert stats["bytes_reclaimed_regions"] <= quota * (duration_s - 4 + 2)
    assert stats["nr_quota_exceeds"] >= 1
    # the hot area stayed resident
    assert after_hot["present"] >= 0.9 * (hot[1] - hot[0]), after_hot
    # and every page still holds what the workload wrote
    check = wl.command("verify")
    assert check["ok"], check


def test_reclaim_stays_idle_above_the_high_watermark(zram_swap, workload, tmp_path) -> None:
    wl = workload("hotcold", "--tick-ms", "50", size="32M")
    cold = wl.areas["cold"]
    status = run_module(
        tmp_path,
        "reclaim",
        "--ops", "vaddr", "--pid", str(wl.pid),
        "--min-age", "1s", "--quota-ms", "0",
        "--wmarks-interval", "1s", "--wmarks-high", "10", "--wmarks-mid", "5",
        "--wmarks-low", "0", *MONITORING,
        "--duration", "6",
    )  # fmt: skip
    stats = status["stats"]
    assert stats["active"] is False
    assert stats["bytes_reclaimed_regions"] == 0
    assert page_states(wl.pid, *cold)["swapped"] == 0
    assert wl.command("verify")["ok"]


def test_thp_collapses_hot_areas_only(workload, tmp_path) -> None:
    thp_mode = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    if "[never]" in thp_mode:
        pytest.skip("THP is disabled in this kernel ([never])")
    wl = workload("hotcold", "--tick-ms", "50", size="128M")
    hot, cold = wl.areas["hot"], wl.areas["cold"]
    assert page_states(wl.pid, *hot)["thp"] == 0  # THP madvise mode: small pages at start
    status = run_module(
        tmp_path,
        "thp",
        "--ops", "vaddr", "--pid", str(wl.pid), *MONITORING,
        "--duration", "12",
    )  # fmt: skip
    hot_states = page_states(wl.pid, *hot)
    cold_states = page_states(wl.pid, *cold)
    aligned_hot = (hot[1] // (2 * MiB) - (hot[0] + 2 * MiB - 1) // (2 * MiB)) * 2 * MiB
    assert hot_states["thp"] >= 0.5 * aligned_hot, (status["stats"], hot_states)
    assert cold_states["thp"] == 0
    assert status["stats"]["bytes_collapsed_regions"] > 0
    assert wl.command("verify")["ok"]
