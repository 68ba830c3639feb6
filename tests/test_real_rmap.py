"""Host tests of the frame -> (pid, vaddr) reverse map behind paddr's pageout, on real processes.

The map is built from real /proc/PID/pagemap data (this process's and a child's pages); where the
kernel hides page frame numbers (not root) the tests skip, as ``pydamon features`` reports.
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from pydamon import features
from pydamon.features import FeatureMissing
from pydamon.ops import _rmap, pagefacts

PAGE = 4096
MiB = 1 << 20

_pfn = features.detect()["pagemap_pfn"]
pytestmark = pytest.mark.skipif(
    not _pfn.available, reason=f"pagemap shows no page frame numbers here: {_pfn.detail}"
)


def touched_area(size: int) -> tuple[mmap.mmap, int]:
    """An anonymous mapping of ``size`` bytes with every page written; (mapping, address)."""
    area = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    view = np.frombuffer(area, np.uint8)
    view[::PAGE] = 1
    return area, int(view.ctypes.data)


def own_pfns(addr: int, size: int) -> np.ndarray:
    """PFN of each page of [addr, addr + size) of this process, read straight from pagemap."""
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(addr // PAGE * 8)
        entries = np.frombuffer(f.read(size // PAGE * 8), np.uint64)
    assert ((entries >> np.uint64(63)) & np.uint64(1)).all()
    return (entries & np.uint64(pagefacts.PM_PFN_MASK)).astype(np.int64)


@contextmanager
def python_child(code: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A Python child running ``code`` (which prints one line when ready, then waits on stdin):
    the process and that line; killed on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        yield proc, proc.stdout.readline()
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def child() -> Iterator[tuple[int, int, int]]:
    """A child process holding 4 MiB of touched anonymous memory: (pid, address, size)."""
    code = (
        "import mmap, json, sys, numpy as np\n"
        "m = mmap.mmap(-1, 4 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
        "v = np.frombuffer(m, np.uint8); v[::4096] = 7\n"
        "print(json.dumps([int(v.ctypes.data), len(m)]), flush=True)\n"
        "sys.stdin.read()\n"
    )
    with python_child(code) as (proc, ready):
        addr, size = json.loads(ready)
        yield proc.pid, addr, size


def test_the_frames_of_a_touched_area_resolve_to_this_process_and_its_addresses() -> None:
    size = 8 * MiB
    area, addr = touched_area(size)
    rmap = _rmap.build_reverse_map([os.getpid()], exclude=())
    assert rmap.nr_processes == 1 and set(rmap.pids.tolist()) == {os.getpid()}
    assert (np.diff(rmap.pfns) >= 0).all()  # sorted by frame
    pfns = own_pfns(addr, size)
    vaddrs = addr + PAGE * np.arange(size // PAGE)
    for pfn, vaddr in zip(pfns.tolist(), vaddrs.tolist()):
        sl = rmap.lookup(pfn * PAGE, (pfn + 1) * PAGE)
        assert list(zip(rmap.pids[sl].tolist(), rmap.vaddrs[sl].tolist())) == [(os.getpid(), vaddr)]
    # a physical range returns exactly the entries with frames inside it
    lo, hi = int(pfns.min()), int(pfns.max()) + 1
    sl = rmap.lookup(lo * PAGE, hi * PAGE)
    inside = rmap.pfns[sl]
    assert inside.min() >= lo and inside.max() < hi
    assert len(inside) == int(((rmap.pfns >= lo) & (rmap.pfns < hi)).sum())
    assert set(pfns.tolist()) <= set(inside.tolist())
    del area


def test_pages_are_grouped_by_process_and_merged_into_address_ranges(child) -> None:
    """Entries of a physical range come in frame order; they go back to address order per
    process, and consecutive pages merge into one range."""
    child_pid, child_addr, child_size = child
    size = 2 * MiB
    area_a, addr_a = touched_area(size)
    area_b, addr_b = touched_area(size)
    rmap = _rmap.build_reverse_map([os.getpid(), child_pid], exclude=())
    assert rmap.nr_processes == 2

    def wanted(pid: int, addr: int, sz: int) -> np.ndarray:
        return (rmap.pids == pid) & (rmap.vaddrs >= addr) & (rmap.vaddrs < addr + sz)

    sel = (
        wanted(os.getpid(), addr_a, size)
        | wanted(os.getpid(), addr_b, size)
        | wanted(child_pid, child_addr, child_size)
    )
    assert int(sel.sum()) == (2 * size + child_size) // PAGE
    groups = _rmap.group_by_pid(rmap.pids[sel], rmap.vaddrs[sel], rmap.pfns[sel])
    assert [pid for pid, _, _ in groups] == sorted([os.getpid(), child_pid])
    ranges = {pid: _rmap.merge_ranges(vaddrs) for pid, vaddrs, _ in groups}
    assert ranges[child_pid] == [(child_addr, child_addr + child_size)]
    if addr_b + size == addr_a:  # mmap may place the second area right below the first
        expected = [(addr_b, addr_a + size)]
    elif addr_a + size == addr_b:
        expected = [(addr_a, addr_b + size)]
    else:
        expected = sorted([(addr_a, addr_a + size), (addr_b, addr_b + size)])
    assert ranges[os.getpid()] == expected
    # each page keeps its frame through the grouping
    for pid, vaddrs, pfns in groups:
        assert (np.diff(vaddrs) > 0).all()
        if pid == os.getpid():
            for start, end in expected:
                inside = (vaddrs >= start) & (vaddrs < end)
                assert pfns[inside].tolist() == own_pfns(start, end - start).tolist()
    del area_a, area_b


def test_the_default_map_scans_other_processes_but_not_this_one(child) -> None:
    child_pid, child_addr, child_size = child
    area, addr = touched_area(2 * MiB)
    rmap = _rmap.build_reverse_map()
    assert os.getpid() not in set(rmap.pids.tolist())
    mine = (rmap.pids == child_pid) & (rmap.vaddrs >= child_addr)
    mine &= rmap.vaddrs < child_addr + child_size
    assert int(mine.sum()) == child_size // PAGE
    assert rmap.nr_processes >= 1 and rmap.build_seconds > 0
    del area


def test_frames_mapped_twice_are_marked_shared(child) -> None:
    """A file page mapped by two processes is one frame with two entries."""
    child_pid, _, _ = child
    with tempfile.NamedTemporaryFile(dir=os.getcwd()) as f:
        f.write(b"x" * (64 * 1024))
        f.flush()
        code = (
            "import mmap, sys\n"
            f"f = open({f.name!r}, 'rb'); m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\n"
            "sum(m[i] for i in range(0, len(m), 4096)); print('ok', flush=True); sys.stdin.read()\n"
        )
        with python_child(code) as (other, ready):
            assert ready.strip() == "ok"
            mine = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
            view = np.frombuffer(mine, np.uint8)
            int(view[::PAGE].sum())  # fault every page in
            pfns = own_pfns(int(view.ctypes.data), len(mine))
            rmap = _rmap.build_reverse_map([os.getpid(), other.pid, child_pid], exclude=())
            for pfn in pfns.tolist():
                sl = rmap.lookup(pfn * PAGE, (pfn + 1) * PAGE)
                assert sorted(rmap.pids[sl].tolist()) == sorted([os.getpid(), other.pid])
                assert rmap.shared[sl].all()
            # the child's private anonymous pages are not shared
            assert not rmap.shared[rmap.pids == child_pid].all()
            del view
            mine.close()


def test_ranges_are_cut_to_pages_that_still_map_the_recorded_frames() -> None:
    size = 1 * MiB
    area, addr = touched_area(size)
    rmap = _rmap.build_reverse_map([os.getpid()], exclude=())
    sel = (rmap.vaddrs >= addr) & (rmap.vaddrs < addr + size)
    [(pid, vaddrs, pfns)] = _rmap.group_by_pid(rmap.pids[sel], rmap.vaddrs[sel], rmap.pfns[sel])
    # drop pages 16..31: they are no longer present, so no longer map what the map recorded
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.madvise(ctypes.c_void_p(addr + 16 * PAGE), ctypes.c_size_t(16 * PAGE), 4) == 0
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        parts = _rmap.verified_ranges(fd, vaddrs, pfns)
        # pages far apart (this area and this process's highest page, usually the stack) are
        # read as separate spans, not as the span between them: same answer
        top = int(np.argmax(rmap.vaddrs))
        assert rmap.vaddrs[top] - (addr + size) > _rmap.GAP_PAGES * PAGE
        sparse = _rmap.verified_ranges(
            fd, np.append(vaddrs, rmap.vaddrs[top]), np.append(pfns, rmap.pfns[top])
        )
        # a recorded frame that differs (the page "moved") cuts that page out
        moved = pfns.copy()
        moved[40] += 1
        cut = _rmap.verified_ranges(fd, vaddrs, moved)
    finally:
        os.close(fd)
    assert parts == [(addr, addr + 16 * PAGE), (addr + 32 * PAGE, addr + size)]
    top_page = int(rmap.vaddrs[top])
    assert sparse[:2] == parts and sparse[2:] in ([], [(top_page, top_page + PAGE)])
    assert cut == [
        (addr, addr + 16 * PAGE),
        (addr + 32 * PAGE, addr + 40 * PAGE),
        (addr + 41 * PAGE, addr + size),
    ]
    del area


def test_gone_and_kernel_processes_are_skipped_without_error() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: its pid no longer exists
    rmap = _rmap.build_reverse_map([proc.pid, 2], exclude=())  # 2: kthreadd
    assert len(rmap) == 0 and rmap.nr_processes == 0


def test_tail_frames_of_a_huge_page_resolve_to_its_head() -> None:
    if not os.access(pagefacts.KPAGEFLAGS, os.R_OK):
        pytest.skip("/proc/kpageflags is not readable here")
    area = mmap.mmap(-1, 8 * MiB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    view = np.frombuffer(area, np.uint8)
    base = int(view.ctypes.data)
    start = (base + 2 * MiB - 1) // (2 * MiB) * (2 * MiB)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(4 * MiB), 14)  # MADV_HUGEPAGE
    view[start - base : start - base + 4 * MiB : PAGE] = 1
    pfns = own_pfns(start, 2 * MiB)
    fd = os.open(pagefacts.KPAGEFLAGS, os.O_RDONLY)
    try:
        flags = pagefacts.read_entries(fd, pfns)
        if not pagefacts.flag(flags[:1], pagefacts.KPF_THP)[0]:
            pytest.skip("the kernel did not back the area with a huge page (THP off or no memory)")
        heads, _ = pagefacts.folio_heads(fd, pfns)
    finally:
        os.close(fd)
    assert (heads == pfns[0]).all() and pfns[0] % 512 == 0
    del view
    area.close()


def build_as_nobody(prelude: str, pids: str) -> str:
    """In a child that runs ``prelude`` (which drops to user nobody), build a reverse map of
    the processes ``pids`` (a Python expression): the error line printed, or ``no error``."""
    code = (
        "import ctypes, os, mmap\n"
        "from pydamon.ops import _rmap\n"
        f"{prelude}"
        "try:\n"
        f"    _rmap.build_reverse_map({pids}, exclude=())\n"
        "except Exception as e:\n"
        "    print(type(e).__name__ + ': ' + str(e))\n"
        "else:\n"
        "    print('no error')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_hidden_frame_numbers_are_one_line_error() -> None:
    """Without CAP_SYS_ADMIN pagemap shows PFNs as 0: building must say so in one line."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop the capability in a child")
    line = build_as_nobody(
        "m = mmap.mmap(-1, 1 << 20); m[0:1] = b'x'\n"
        "os.setuid(65534)\n"
        "ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: /proc/self readable again\n",
        "[os.getpid()]",
    )
    assert line.startswith(FeatureMissing.__name__), line
    assert "run as root" in line and "\n" not in line


def test_a_map_of_nothing_readable_is_one_line_error() -> None:
    """A user who may read no process's pagemap gets told so (not an empty map)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to another user in a child")
    line = build_as_nobody(
        "os.setuid(65534)  # no longer dumpable: even its own /proc/self/maps is root's\n",
        "[1, os.getpid()]",
    )
    assert line.startswith(FeatureMissing.__name__) and "run as root" in line, line


def test_ops_filters_decide_per_frame_on_the_paddr_path() -> None:
    """paddr evaluates a scheme's ops filters on the frames the map found: an anon reject
    filter (reclaim's skip_anon) keeps this process's anonymous frames and passes file frames."""
    if not os.access(pagefacts.KPAGEFLAGS, os.R_OK):
        pytest.skip("/proc/kpageflags is not readable here")
    from pydamon.damos.filters import set_filters_default_reject
    from pydamon.damos.scheme import Action, Filter, FilterType, Scheme
    from pydamon.ops.paddr import PaddrOperations

    anon_area, anon_addr = touched_area(1 * MiB)
    with tempfile.NamedTemporaryFile(dir=os.getcwd()) as f:
        f.write(b"y" * MiB)
        f.flush()
        file_map = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        view = np.frombuffer(file_map, np.uint8)
        int(view[::PAGE].sum())
        anon_pfns = own_pfns(anon_addr, MiB)
        file_pfns = own_pfns(int(view.ctypes.data), MiB)
        pfns = np.concatenate([anon_pfns, file_pfns])
        order = np.argsort(pfns)  # the map hands frames over in frame order
        skip_anon = Scheme(
            action=Action.PAGEOUT, filters=[Filter(type=FilterType.ANON, allow=False)]
        )
        set_filters_default_reject(skip_anon)
        passed = np.empty(len(pfns), np.bool_)
        # reject_young=False: the young check needs page_idle, which this host may lack
        passed[order] = PaddrOperations().filters_pass(skip_anon, pfns[order], reject_young=False)
        assert not passed[: len(anon_pfns)].any() and passed[len(anon_pfns) :].all()
        # allow only anonymous memory: the opposite, unmatched frames rejected by default
        anon_only = Scheme(
            action=Action.LRU_DEPRIO, filters=[Filter(type=FilterType.ANON, allow=True)]
        )
        set_filters_default_reject(anon_only)
        passed[order] = PaddrOperations().filters_pass(anon_only, pfns[order], reject_young=False)
        assert passed[: len(anon_pfns)].all() and not passed[len(anon_pfns) :].any()
        del view
        file_map.close()
    del anon_area
