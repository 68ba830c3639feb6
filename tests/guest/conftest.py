"""Fixtures for guest tests: real workload processes (``python -m pydamon.workload``)."""

from __future__ import annotations

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
