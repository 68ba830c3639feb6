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
