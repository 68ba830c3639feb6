"""System calls of the access check: bitmap words shared among frames, kpageflags read only
where huge pages may be, and the frames not looked up still checked right (off the LRU, THP
tails), in the C path and the Python path alike. On plain files standing in for kpageflags and
the idle bitmap (no root, no page_idle needed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pydamon.core.regions import Regions
from pydamon.ops import _native, _proc, pagefacts
from pydamon.ops.hugemaps import HugeMappings

NR_PFNS = 4096
PATHS = ["python", *(["c"] if _native.load() is not None else [])]


def _phys(tmp_path: Path, name: str) -> pagefacts.PhysPages:
    """Every frame on the LRU but a THP's tails (1025..1535) and frame 7 (off the LRU)."""
    flags = np.full(NR_PFNS, 1 << pagefacts.KPF_LRU, np.uint64)
    flags[1024] |= np.uint64(1 << pagefacts.KPF_COMPOUND_HEAD)
    flags[1025:1536] = np.uint64(1 << pagefacts.KPF_COMPOUND_TAIL)
    flags[7] = 0
    (tmp_path / f"kpf-{name}").write_bytes(flags.tobytes())
    (tmp_path / f"bitmap-{name}").write_bytes(b"")
    phys = pagefacts.PhysPages.__new__(pagefacts.PhysPages)
    phys.kpageflags_fd = os.open(tmp_path / f"kpf-{name}", os.O_RDONLY)
    phys.bitmap_fd = os.open(tmp_path / f"bitmap-{name}", os.O_RDWR)
    return phys


def _run(
    tmp_path: Path, path: str, pfn_list: list[int], huge: np.ndarray | None, pattern: int
) -> tuple[list[int], list[bool], list[int], np.ndarray]:
    """prepare + check of physical addresses on the files; the bitmap reads back ``pattern``
    in every word. Returns the PFNs after prepare, accessed, the PFNs after check, stats."""
    phys = _phys(tmp_path, path)
    stats = _native.new_stats()
    try:
        addrs = np.array(pfn_list, np.int64) << 12
        pfns = _native.prepare(phys, None, addrs, path == "c", huge, stats)
        prepared = pfns.tolist()
        os.pwrite(phys.bitmap_fd, np.full(NR_PFNS // 64, pattern % 2**64, np.uint64).tobytes(), 0)
        accessed = _native.check(phys, pfns, path == "c", stats)
        return prepared, accessed.tolist(), pfns.tolist(), stats
    finally:
        phys.close()


@pytest.mark.parametrize("path", PATHS)
def test_frames_sharing_a_bitmap_word_share_its_read_and_write(tmp_path: Path, path: str) -> None:
    # 64..127: one word; 128 and 191: the next word (adjacent: same call); 3000: far away
    pfn_list = [64, 100, 127, 65, 128, 191, 3000]
    _, _, _, stats = _run(tmp_path, path, pfn_list, np.zeros(0, np.int64), -1)
    # one pwrite for the words 1 and 2, one for word 46; the same two preads at check; all
    # bits read idle, so nothing to verify
    assert stats[_native.STAT_SYSCALLS] == 4, stats
    # the bits of all of them were set, each in its own word
    words = np.frombuffer((tmp_path / f"bitmap-{path}").read_bytes(), np.uint64)
    assert len(words) == NR_PFNS // 64  # (the pattern overwrote; re-run to see the marks)
    phys = _phys(tmp_path, path + "-marks")
    try:
        _native.prepare(phys, None, np.array(pfn_list, np.int64) << 12, path == "c")
        marks = np.frombuffer((tmp_path / f"bitmap-{path}-marks").read_bytes(), np.uint64)
        for p in pfn_list:
            assert int(marks[p >> 6]) >> (p & 63) & 1, p
    finally:
        phys.close()


@pytest.mark.parametrize("path", PATHS)
def test_kpageflags_only_where_huge_pages_may_be(tmp_path: Path, path: str) -> None:
    pfn_list = [1, 200, 900, 2000]
    everywhere = _run(tmp_path, path, pfn_list, None, -1)  # all idle
    nowhere = _run(tmp_path, path, pfn_list, np.zeros(0, np.int64), -1)
    # huge pages anywhere: one kpageflags pread per frame (none adjacent); nowhere: none,
    # and the bitmap's one pwrite + one pread per (non-adjacent) word either way
    assert everywhere[3][_native.STAT_SYSCALLS] == 4 + 4 + 4
    assert nowhere[3][_native.STAT_SYSCALLS] == 4 + 4
    assert everywhere[1] == nowhere[1] == [False] * 4
    # only inside the ranges: the frames 200 and 900
    inside = np.array([200 << 12, 901 << 12], np.int64)
    some = _run(tmp_path, path, pfn_list, inside, -1)
    assert some[3][_native.STAT_SYSCALLS] == 2 + 4 + 4
    assert [p & _native.PFN_UNVERIFIED != 0 for p in some[0]] == [True, False, False, True]


@pytest.mark.parametrize("path", PATHS)
def test_frames_not_looked_up_read_accessed_only_if_page_idle_tracks_them(
    tmp_path: Path, path: str
) -> None:
    """page_idle reads a frame it cannot track (off the LRU, a THP tail) as "not idle": the
    check looks such frames up in kpageflags before counting them accessed."""
    pfn_list = [7, 1030, 1024, 3000]  # off the LRU, a tail, the THP's head, a plain page
    prepared, accessed, after, stats = _run(tmp_path, path, pfn_list, np.zeros(0, np.int64), 0)
    assert all(p & _native.PFN_UNVERIFIED for p in prepared)
    assert accessed == [False, False, True, True]
    assert after[1] == _native.PFN_TAIL_SEEN and stats[_native.STAT_TAILS_SEEN] == 1
    # looked up at prepare (huge pages anywhere): the tail maps to its head, which reads
    # accessed; the off-LRU frame is not checked at all
    prepared, accessed, _, _ = _run(tmp_path, path, pfn_list, None, 0)
    assert prepared == [-1, 1024, 1024, 3000] and accessed == [False, True, True, True]


def test_c_and_python_paths_count_the_same_system_calls(tmp_path: Path) -> None:
    if "c" not in PATHS:
        pytest.skip(f"only the Python path here: {_native.status().why}")
    rng = np.random.default_rng(5)
    for trial in range(20):
        pfn_list = rng.integers(0, NR_PFNS + 100, rng.integers(1, 60)).tolist()
        edges = np.sort(rng.integers(0, NR_PFNS << 12, 4)).astype(np.int64)
        huge = [None, np.zeros(0, np.int64), edges][trial % 3]
        pattern = int(rng.integers(0, 2**63))
        runs = [_run(tmp_path, p, pfn_list, huge, pattern) for p in ("c", "python")]
        assert runs[0][:3] == runs[1][:3]
        assert np.array_equal(runs[0][3], runs[1][3])


def test_sampler_adds_the_mapping_of_an_unknown_huge_page(tmp_path: Path) -> None:
    """A check that meets a THP tail where no huge page was known reports it; the mapping then
    reads kpageflags at prepare (its head found) from the next sample on."""
    for path in PATHS:
        phys = _phys(tmp_path, path)
        try:
            sampler = _native.Sampler(np.random.default_rng(1), native=path == "c")
            sampler.huge = np.zeros(0, np.int64)
            seen: list[list[int]] = []

            def tails_seen(
                addrs: np.ndarray, s: _native.Sampler = sampler, seen: list = seen
            ) -> None:
                seen.append(addrs.tolist())
                s.huge = np.array([1024 << 12, 1536 << 12], np.int64)

            sampler.on_tails_seen = tails_seen
            regions = Regions([(1030 << 12, 1031 << 12), (3000 << 12, 3001 << 12)])
            for _ in range(2):
                sampler.pick_prepare(phys, None, regions)
                os.pwrite(phys.bitmap_fd, np.zeros(NR_PFNS // 64, np.uint64).tobytes(), 0)
                sampler.check_update(phys, regions, 10)
            assert len(seen) == 1 and seen[0][0] >> 12 == 1030, (path, seen)
            # the first sample lost the THP's access, the second found its head
            assert regions.nr_accesses.tolist() == [1, 2], path
            assert sampler.syscalls_per_region_sample() is not None
        finally:
            phys.close()


SMAPS = """\
00400000-00401000 r-xp 00000000 08:01 1234 /bin/prog
Size:                  4 kB
AnonHugePages:         0 kB
VmFlags: rd ex
7f0000000000-7f0000400000 rw-p 00000000 00:00 0
Size:               4096 kB
AnonHugePages:      2048 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
THPeligible:    1
VmFlags: rd wr mr mw me ac hg
7f0000400000-7f0000800000 rw-s 00000000 00:01 99 /dev/shm/x
Size:               4096 kB
AnonHugePages:         0 kB
ShmemPmdMapped:     2048 kB
THPeligible:    1
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
AnonHugePages:         0 kB
THPeligible:    1
"""


def test_smaps_gives_the_mappings_and_those_with_huge_pages() -> None:
    maps, huge = _proc.parse_smaps(SMAPS)
    assert [m.start for m in maps] == [0x400000, 0x7F0000000000, 0x7F0000400000, 0x7FFD00000000]
    assert maps[-1].path == "[stack]"
    # counted huge pages, not THPeligible (which "always" sets on every anonymous mapping)
    assert huge == [(0x7F0000000000, 0x7F0000400000), (0x7F0000400000, 0x7F0000800000)]


def test_huge_mappings_of_this_process_follow_tails_seen() -> None:
    huge = HugeMappings(os.getpid())
    maps = huge.update()
    assert maps and huge.nr_smaps_reads == 1
    before = huge.ranges.copy()
    # a tail met in a mapping not in the ranges: the whole mapping joins them, and stays
    target = next(m for m in maps if not _in(before, m.start))
    huge.tails_seen(np.array([target.start], np.int64))
    assert _in(huge.ranges, target.start) and _in(huge.ranges, target.end - 1)
    huge.update()
    assert _in(huge.ranges, target.start)
    # outside every mapping: that huge page's own span
    huge.tails_seen(np.array([0x10_0000_1000], np.int64))
    assert _in(huge.ranges, 0x10_0000_0000) and not _in(huge.ranges, 0x10_0020_0000)


def _in(ranges: np.ndarray, addr: int) -> bool:
    return bool(np.searchsorted(ranges, addr, side="right") & 1)


def test_syscalls_per_region_sample_of_targets(tmp_path: Path) -> None:
    """What ``pydamon status`` shows: the samplers' system calls over their region-samples."""
    from types import SimpleNamespace

    from pydamon.ops.probe import syscalls_per_region_sample

    phys = _phys(tmp_path, "status")
    try:
        sampler = _native.Sampler(np.random.default_rng(2))
        sampler.huge = np.zeros(0, np.int64)
        targets = [SimpleNamespace(ops_private=sampler), SimpleNamespace(ops_private=None)]
        assert syscalls_per_region_sample(targets) is None  # nothing sampled yet
        regions = Regions([(i << 18, (i + 1) << 18) for i in range(4)])  # 64 frames each
        sampler.pick_prepare(phys, None, regions)
        os.pwrite(phys.bitmap_fd, np.full(NR_PFNS // 64, 2**64 - 1, np.uint64).tobytes(), 0)
        sampler.check_update(phys, regions, 10)
        # 4 frames in 4 adjacent words: one pwrite and one pread for the 4 region-samples
        assert syscalls_per_region_sample(targets) == 0.5
    finally:
        phys.close()
