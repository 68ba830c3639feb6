"""Fixtures for guest tests: real workload processes (``python -m pydamon.workload``)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator

import pytest
from realmem import WorkloadProcess


@pytest.fixture
def workload() -> Iterator[Callable[..., WorkloadProcess]]:
    """Factory: ``workload("hotcold", size="32M", "--tick-ms", "5")`` starts a workload process.

    Positional strings after the pattern are passed as extra command-line options. Every
    process started is killed at teardown.
    """
    started: list[WorkloadProcess] = []

    def start(pattern: str, *options: str, size: str = "32M") -> WorkloadProcess:
        wl = WorkloadProcess([pattern, "--size", size, *options])
        started.append(wl)
        return wl

    yield start
    for wl in started:
        wl.stop()


@pytest.fixture(scope="module")
def zram_swap() -> None:
    """A zram swap device (the guest has no other swap).

    Tests that use it change the system, so they run only inside the test guest (the suite's
    conftest sends them there even where this machine has page_idle).
    """
    if os.environ.get("PYDAMON_IN_GUEST") != "1":
        pytest.fail("zram_swap turns swap on: it may only run inside the test guest")
    if "zram" in open("/proc/swaps").read():
        return
    if not os.path.exists("/sys/block/zram0/disksize"):
        pytest.skip("no zram device (kernel without CONFIG_ZRAM)")
    with open("/sys/block/zram0/disksize", "w") as f:
        f.write(str(512 << 20))
    subprocess.run(["mkswap", "/dev/zram0"], check=True, capture_output=True)
    subprocess.run(["swapon", "/dev/zram0"], check=True, capture_output=True)
