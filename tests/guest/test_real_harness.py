"""The guest harness itself: guest tests run where page_idle works."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.guest


def test_page_idle_bitmap_readable_and_writable() -> None:
    fd = os.open("/sys/kernel/mm/page_idle/bitmap", os.O_RDWR)
    try:
        word = os.pread(fd, 8, 0)
    finally:
        os.close(fd)
    assert len(word) == 8


def test_runs_as_root() -> None:
    assert os.geteuid() == 0


def test_trace_events_in_the_guest_do_not_patch_the_scheduler() -> None:
    # tests/conftest.py turns record-cmd off in the guest: with it on, each trace event enabled
    # or disabled live-patches sched_switch/sched_wakeup, which crashes the emulated guest
    if os.environ.get("PYDAMON_IN_GUEST") != "1":
        pytest.skip("a setting of the test guest; this run is native")
    with open("/sys/kernel/tracing/options/record-cmd") as f:
        assert f.read().strip() == "0"
