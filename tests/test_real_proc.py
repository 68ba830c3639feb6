"""Host tests of the real-memory helpers: /proc parsing, three regions, pagemap, madvise,
feature detection, the workload program and ``pydamon features``."""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys

import numpy as np
import pytest

from pydamon import features
from pydamon.core import Attrs, Context, Target
from pydamon.ops import _proc, pagefacts
from pydamon.ops.madvise import MADV, PidFd, madvise, process_madvise
from pydamon.ops.vaddr import VaddrOperations

MAPS = """\
555555554000-555555556000 r--p 00000000 08:01 123  /usr/bin/cat
555555556000-55555555b000 r-xp 00002000 08:01 123  /usr/bin/cat
555555560000-555555581000 rw-p 00000000 00:00 0    [heap]
7ffff7d00000-7ffff7e00000 rw-p 00000000 00:00 0
7ffff7e00000-7ffff7f00000 r-xp 00000000 08:01 456  /usr/lib/libc.so.6
7ffff7f10000-7ffff7f20000 rw-p 00000000 00:00 0
7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0    [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]
"""

IOMEM = """\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
0009fc00-0009ffff : Reserved
00100000-7ffdffff : System RAM
  01000000-01e00000 : Kernel code
7ffe0000-7fffffff : Reserved
100000000-17fffffff : System RAM
"""


def test_parse_maps_and_three_regions_match_the_kernel() -> None:
    maps = _proc.user_mappings(_proc.parse_maps(MAPS))
    assert len(maps) == 7  # [vsyscall] is no VMA
    assert maps[2] == _proc.Mapping(0x555555560000, 0x555555581000, "rw-p", "[heap]")
    regions = _proc.three_regions(maps)
    # the two biggest gaps: heap..first mmap, last mmap..stack
    assert regions == [
        (0x555555554000, 0x555555581000),
        (0x7FFFF7D00000, 0x7FFFF7F20000),
        (0x7FFFFFFDE000, 0x7FFFFFFFF000),
    ]


def test_three_regions_ties_and_failures() -> None:
    # equal gaps: the earlier one is the biggest, a later equal one does not replace it
    spans = [(0, 4096), (8192, 12288), (16384, 20480), (24576, 28672)]
    assert _proc.three_regions(spans) == [(0, 4096), (8192, 12288), (16384, 28672)]
    assert _proc.three_regions([(0, 4096), (8192, 12288)]) is None
    assert _proc.three_regions([]) is None


def test_iomem_largest_system_ram_and_hidden_addresses() -> None:
    assert _proc.system_ram_ranges(IOMEM) == [
        (0x1000, 0x9FC00),
        (0x100000, 0x7FFE0000),
        (0x100000000, 0x180000000),
    ]
    assert _proc.largest_system_ram(IOMEM) == (0x100000000, 0x180000000)
    hidden = "00000000-00000000 : System RAM\n00000000-00000000 : System RAM\n"
    assert _proc.largest_system_ram(hidden) is None


def test_read_maps_of_a_missing_process() -> None:
    with pytest.raises(ProcessLookupError, match="does not exist"):
        _proc.read_maps(2**22 + 4321)


@pytest.mark.skipif(os.geteuid() != 0, reason="pagemap PFNs are visible to root only")
def test_pagemap_pfns_of_own_pages() -> None:
    buf = mmap.mmap(-1, 4 * 4096)
    arr = np.frombuffer(buf, np.uint8)
    addr = int(arr.ctypes.data)
    arr[0] = 1
    arr[2 * 4096] = 1  # pages 0 and 2 touched, 1 and 3 not
    pagemap = pagefacts.Pagemap("self")
    try:
        pfns = pagemap.pfns([addr, addr + 4096, addr + 2 * 4096, addr + 3 * 4096])
        entries = pagemap.entries(np.array([addr, addr + 4096], np.int64))
    finally:
        pagemap.close()
    assert pfns[0] > 0 and pfns[2] > 0 and pfns[0] != pfns[2]
    assert pfns[1] == -1 and pfns[3] == -1
    dec_pfns, present, swapped = pagefacts.decode_pagemap(entries)
    assert present.tolist() == [True, False] and not swapped.any()
    assert dec_pfns[0] == pfns[0] and dec_pfns[1] == -1
    del arr


def test_madvise_wrappers_on_own_memory() -> None:
    buf = mmap.mmap(-1, 8 * 4096)
    arr = np.frombuffer(buf, np.uint8)
    arr[::4096] = 7
    start = int(arr.ctypes.data)
    ranges = [(start, start + 4 * 4096), (start + 4 * 4096, start + 8 * 4096)]
    with PidFd(os.getpid()) as pidfd:
        res = process_madvise(pidfd, ranges, MADV["cold"])
    assert res.sz_advised == 8 * 4096 and res.nr_ranges_failed == 0
    res = madvise(ranges[:1], MADV["nohugepage"])
    assert res.sz_advised == 4 * 4096
    # an unmapped range fails on its own and is counted, the others still apply
    with PidFd(os.getpid()) as pidfd:
        res = process_madvise(pidfd, [*ranges, (4096, 8192)], MADV["cold"])
    assert res.sz_advised == 8 * 4096 and res.nr_ranges_failed == 1
    assert int(arr[4096]) == 7  # cold keeps the data
    del arr


def test_pidfd_of_missing_process() -> None:
    with pytest.raises(ProcessLookupError):
        PidFd(2**22 + 999)


def test_features_detect_and_cli() -> None:
    found = features.detect()
    for name in ("page_idle", "pagemap_pfn", "process_madvise", "swap", "thp", "root"):
        assert name in found
    out = subprocess.run(
        [sys.executable, "-m", "pydamon.cli.main", "features", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    data = json.loads(out.stdout)
    assert set(data["ops"]) == {"vaddr", "fvaddr", "paddr"}
    usable = data["ops"]["vaddr"]["usable"]
    assert out.returncode == (0 if all(o["usable"] for o in data["ops"].values()) else 3)
    assert usable == found["page_idle"].available and found["pagemap_pfn"].available


@pytest.mark.skipif(
    os.access(pagefacts.PAGE_IDLE_BITMAP, os.W_OK), reason="this host has page_idle"
)
def test_no_page_idle_gives_one_line_error() -> None:
    ctx = Context(VaddrOperations(), [Target(pid=os.getpid())], Attrs())
    with pytest.raises(features.FeatureMissing) as err:
        ctx.run(nr_aggregations=1)
    msg = str(err.value)
    assert "\n" not in msg and "page_idle" in msg
    assert "CONFIG_IDLE_PAGE_TRACKING" in msg or "root" in msg
    # through the CLI: one line, exit 3, no traceback
    out = subprocess.run(
        [sys.executable, "-m", "pydamon.cli.main", "features"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 3 and "Traceback" not in out.stderr


def test_workload_program_areas_commands_and_verify() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pydamon.workload", "stairs", "--size", "4M", "--tick-ms", "2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    assert ready["event"] == "ready" and ready["pid"] == proc.pid
    names = [a["name"] for a in ready["areas"]]
    assert sorted(names) == [f"step{i}" for i in range(8)]
    maps = _proc.read_maps(proc.pid)
    for a in ready["areas"]:  # every area is mapped in the process
        assert any(m.start <= a["start"] and a["end"] <= m.end for m in maps)
    proc.stdin.write("map extra 1M\nverify\nunmap extra\nbogus\nexit\n")
    proc.stdin.flush()
    events = [json.loads(line) for line in proc.stdout]
    assert proc.wait(timeout=30) == 0
    kinds = [e["event"] for e in events]
    assert kinds == ["map", "verify", "unmap", "error", "exit"]
    assert events[1]["ok"] and events[1]["checked_pages"] == 1024 + 256
    assert events[0]["end"] - events[0]["start"] == 1 << 20


def test_workload_program_bad_pattern_is_one_line() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pydamon.workload", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "unknown workload" in out.stderr


def _phys_on_kpageflags():
    """A PhysPages on the real kpageflags (the caller sets the bitmap fd)."""
    phys = pagefacts.PhysPages.__new__(pagefacts.PhysPages)
    phys.kpageflags_fd = os.open(pagefacts.KPAGEFLAGS, os.O_RDONLY)
    return phys


@pytest.mark.skipif(os.geteuid() != 0, reason="pagemap PFNs and kpageflags need root")
def test_c_and_python_paths_agree(tmp_path) -> None:
    from pydamon.ops import _native

    if _native.load() is None:
        pytest.skip(f"only the Python path here: {_native.status().why}")
    buf = mmap.mmap(-1, 64 * 4096)
    arr = np.frombuffer(buf, np.uint8)
    arr[: 48 * 4096 : 4096] = 1  # 48 of 64 pages present
    base = int(arr.ctypes.data)
    # MADV_COLD drains this CPU's LRU-add batch, so all runs see the pages on the LRU
    madvise([(base, base + 64 * 4096)], MADV["cold"])
    # a region per page, plus addresses that share pages (and so bitmap words)
    offsets = np.arange(0, 64 * 4096, 4096, dtype=np.int64) + 123
    offsets = np.concatenate([offsets, offsets[:8] + 7, np.tile(offsets[::3], 60)])
    addrs = base + offsets
    # a stand-in bitmap: the real one is missing on this host; a regular file shows what is
    # written where, and what is read back
    pagemap = pagefacts.Pagemap("self")
    results = {}
    try:
        for path in ("c", "python"):
            phys = _phys_on_kpageflags()
            try:
                bitmap = tmp_path / f"bitmap-{path}"
                bitmap.write_bytes(b"")
                phys.bitmap_fd = os.open(bitmap, os.O_RDWR)
                pfns = _native.prepare(phys, pagemap, addrs, native=path != "python")
                os.close(phys.bitmap_fd)
                # every trackable page had its bit set (bits of one word in one write)
                words = np.frombuffer(bitmap.read_bytes(), np.uint64)
                for p in pfns[pfns >= 0].tolist():
                    assert (int(words[p >> 6]) >> (p & 63)) & 1, path
                # read back against a fixed pattern
                pattern = np.random.default_rng(1).integers(
                    0, 2**63, len(words) + 1, dtype=np.int64
                )
                bitmap.write_bytes(pattern.astype(np.uint64).tobytes())
                phys.bitmap_fd = os.open(bitmap, os.O_RDWR)
                accessed = _native.check(phys, pfns, native=path != "python")
                os.close(phys.bitmap_fd)
                results[path] = (pfns, accessed)
            finally:
                phys.bitmap_fd = -1
                phys.close()
    finally:
        pagemap.close()
    pfns_py, acc_py = results["python"]
    pfns, acc = results["c"]
    # a page may still sit in another CPU's LRU-add batch (untrackable, -1) in one run only
    both = (pfns >= 0) & (pfns_py >= 0)
    assert both.sum() >= 0.6 * len(addrs) and np.array_equal(pfns[both], pfns_py[both])
    assert (pfns[48:64] == -1).all() and (pfns_py[48:64] == -1).all()  # never touched
    assert np.array_equal(acc[both], acc_py[both])
    assert not acc[pfns < 0].any()
    assert acc[both].any() and not acc[both].all()  # the pattern has both kinds of bits
    del arr


def test_c_path_reads_and_writes_like_python(tmp_path) -> None:
    """The C path on plain files (no root needed): paddr-style addresses, a file standing in
    for kpageflags (every page on the LRU, a THP at PFN 1024) and for the bitmap."""
    from pydamon.ops import _native

    if _native.load() is None:
        pytest.skip(f"only the Python path here: {_native.status().why}")
    flags = np.full(4096, 1 << pagefacts.KPF_LRU, np.uint64)
    flags[1024] |= np.uint64(1 << pagefacts.KPF_COMPOUND_HEAD)
    flags[1025:1536] = np.uint64(1 << pagefacts.KPF_COMPOUND_TAIL)  # tails: not on the LRU
    flags[7] = 0  # off the LRU
    (tmp_path / "kpf").write_bytes(flags.tobytes())
    pfn_list = [0, 1, 7, 64, 65, 1030, 1535, 4095, 5000]  # 0: hidden, 5000: past the end
    addrs = np.array(pfn_list, np.int64) << 12
    results = {}
    for path in ("c", "python"):
        phys = pagefacts.PhysPages.__new__(pagefacts.PhysPages)
        phys.kpageflags_fd = os.open(tmp_path / "kpf", os.O_RDONLY)
        bitmap = tmp_path / f"bitmap-{path}"
        bitmap.write_bytes(b"")
        phys.bitmap_fd = os.open(bitmap, os.O_RDWR)
        try:
            pfns = _native.prepare(phys, None, addrs, native=path != "python")
            written = bitmap.read_bytes()
            os.pwrite(phys.bitmap_fd, np.full(80, 0x5555555555555555, np.uint64).tobytes(), 0)
            accessed = _native.check(phys, pfns, native=path != "python")
        finally:
            phys.close()
        results[path] = (pfns.tolist(), written, accessed.tolist())
    assert results["python"][0] == [-1, 1, -1, 64, 65, 1024, 1024, 4095, -1]
    assert results["c"] == results["python"]
    # odd PFNs have their bit clear in the pattern: accessed
    assert results["python"][2] == [False, True, False, False, True, False, False, True, False]
