"""The one home of page facts (pydamon.ops.pagefacts): folio sizes and heads, the young check of
the ops filters on files standing in for kpageflags and the idle bitmap, a process's own pages,
the vaddr ops-filter path, and the C helper's copy of the page constants."""

from __future__ import annotations

import ast
import ctypes
import mmap
import os
import re
from pathlib import Path

import numpy as np
import pytest

from pydamon.core.regions import PAGE_SHIFT, PAGE_SIZE
from pydamon.damos import Filter, FilterType, Scheme
from pydamon.damos.filters import FilterUnsupported, ops_filters_pass, set_filters_default_reject
from pydamon.ops import pagefacts
from pydamon.ops.vaddr import filter_process_ranges

SRC = Path(__file__).resolve().parent.parent / "src"
HEAD, TAIL, THP, LRU = (1 << b for b in (15, 16, 22, 5))


def test_folio_sizes_from_kpageflags() -> None:
    flags = np.array([0, HEAD, TAIL, TAIL, TAIL, HEAD | THP, TAIL | THP, 0], np.uint64)
    pfns = np.array([9, 100, 101, 102, 103, 512, 513, 7], np.int64)
    sizes = pagefacts.folio_sizes(flags, pfns).tolist()
    assert sizes == [4096, 16384, 16384, 16384, 16384, 2 << 20, 2 << 20, 4096]


@pytest.fixture
def fake_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """kpageflags and the idle bitmap as plain files: frames 1024-1535 are one THP (head 1024,
    anon and active only on the head, as kernels before 6.10 report tails), frame 2048 a small
    anon page; the THP's head and frame 2048 are marked idle, as after the last young check."""
    flags = np.zeros(4096, np.uint64)
    flags[1024] = HEAD | THP | LRU | (1 << pagefacts.KPF_ANON) | (1 << pagefacts.KPF_ACTIVE)
    flags[1025:1536] = TAIL | THP
    flags[2048] = LRU | (1 << pagefacts.KPF_ANON)
    (tmp_path / "kpageflags").write_bytes(flags.tobytes())
    bitmap = np.zeros(4096 // 64, np.uint64)
    bitmap[1024 // 64] = 1  # frame 1024
    bitmap[2048 // 64] = 1  # frame 2048
    (tmp_path / "bitmap").write_bytes(bitmap.tobytes())
    monkeypatch.setattr(pagefacts, "KPAGEFLAGS", str(tmp_path / "kpageflags"))
    monkeypatch.setattr(pagefacts, "PAGE_IDLE_BITMAP", str(tmp_path / "bitmap"))
    return tmp_path


def _bitmap_bits(path: Path) -> set[int]:
    words = np.frombuffer(path.read_bytes(), np.uint64)
    return {w * 64 + b for w in range(words.shape[0]) for b in range(64) if int(words[w]) >> b & 1}


def test_tail_frames_take_their_heads_young_state_and_flags(fake_frames: Path) -> None:
    pfns = np.array([1024, 1025, 1300, 1535, 2048], np.int64)
    present = np.ones(pfns.shape[0], np.bool_)
    needed = {FilterType.YOUNG, FilterType.ACTIVE, FilterType.ANON}
    facts = pagefacts.page_facts_for_pfns(pfns, present, needed)
    # the huge page's head is idle, so its tails are not young (their own bits read 0, as a
    # tail's bit always does in the kernel)
    assert facts.young is not None and facts.young.tolist() == [False] * 5
    assert facts.active is not None and facts.active.tolist() == [True] * 4 + [False]
    assert facts.anon is not None and facts.anon.all()
    # touched since: the head's bit is clear, and every page of the folio reads young; the
    # check marks the young folio idle again through its head, never a tail
    (fake_frames / "bitmap").write_bytes(np.zeros(64, np.uint64).tobytes())
    facts = pagefacts.page_facts_for_pfns(pfns, present, {FilterType.YOUNG})
    assert facts.young is not None and facts.young.all()
    assert _bitmap_bits(fake_frames / "bitmap") == {1024, 2048}


def test_the_young_filter_on_a_huge_page_decides_by_its_head(fake_frames: Path) -> None:
    pfns = np.arange(1024, 1536, dtype=np.int64)
    allow_young = Scheme(filters=[Filter(FilterType.YOUNG, allow=True)])
    set_filters_default_reject(allow_young)
    facts = pagefacts.page_facts_for_pfns(pfns, np.ones(512, np.bool_), {FilterType.YOUNG})
    assert not ops_filters_pass(allow_young, facts).any()


def test_folio_heads_of_tails_and_of_frames_without_head(tmp_path: Path) -> None:
    flags = np.zeros(2048, np.uint64)
    flags[512] = HEAD
    flags[513:1024] = TAIL
    flags[1536:1540] = TAIL  # no head anywhere below: left as they are
    (tmp_path / "kpf").write_bytes(flags.tobytes())
    fd = os.open(tmp_path / "kpf", os.O_RDONLY)
    try:
        pfns = np.array([3, 512, 700, 1023, 1537], np.int64)
        heads, head_flags = pagefacts.folio_heads(fd, pfns)
    finally:
        os.close(fd)
    assert heads.tolist() == [3, 512, 512, 512, 1537]
    assert head_flags.tolist() == [0, HEAD, HEAD, HEAD, TAIL]


def test_read_page_facts_of_own_memory() -> None:
    size = 16 * 4096
    private = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    shared = mmap.mmap(-1, size)  # shared anonymous memory is shmem, not anon (as the kernel)
    for buf in (private, shared):
        for i in range(0, 8 * 4096, 4096):
            buf[i] = 1  # touch the first 8 pages only
    for buf, anon in ((private, True), (shared, False)):
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        got = pagefacts.read_page_facts(os.getpid(), addr, addr + size, {FilterType.ANON})
        assert got.present.tolist() == [True] * 8 + [False] * 8
        assert got.anon is not None and got.anon[:8].tolist() == [anon] * 8
        del got
    private.close()
    shared.close()


def test_the_vaddr_filter_path_cuts_ranges_to_passing_pages() -> None:
    buf = mmap.mmap(-1, 8 * 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for i in range(0, 4 * 4096, 4096):
        buf[i] = 1
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    allow_anon = Scheme(filters=[Filter(FilterType.ANON, allow=True)])
    set_filters_default_reject(allow_anon)
    got, passed = filter_process_ranges(os.getpid(), [(addr, addr + 8 * 4096)], allow_anon)
    assert got == [(addr, addr + 4 * 4096)] and passed == 4 * 4096
    no_filters = Scheme()
    assert filter_process_ranges(os.getpid(), [(addr, addr + 4096)], no_filters) == (
        [(addr, addr + 4096)],
        0,
    )
    buf.close()


def test_a_memcg_filter_on_a_missing_cgroup_is_one_line_error() -> None:
    with pytest.raises(FilterUnsupported, match="cannot find cgroup '/no/such'"):
        pagefacts.memcg_inos([Filter(FilterType.MEMCG, memcg_path="/no/such")])


# -- the C helper's copy of the page constants ---------------------------------------------------


def _c_value(expr: str) -> int:
    """The value of a C integer constant expression of literals, ``<<``, ``-`` and parens."""
    tree = ast.parse(re.sub(r"\b(\d+)[uUlL]+\b", r"\1", expr), mode="eval")
    for node in ast.walk(tree):
        ok = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.LShift, ast.Sub, ast.USub)
        assert isinstance(node, ok), f"not a plain constant expression: {expr}"
    return int(eval(compile(tree, "<define>", "eval")))


def c_page_defines(text: str) -> dict[str, int]:
    """The ``#define``s of page constants (PM_*, KPF_*, PAGE_*, MAX_FOLIO_ORDER) in C source."""
    found = {}
    for name, expr in re.findall(r"^\s*#\s*define\s+(\w+)[ \t]+(.+?)\s*$", text, re.M):
        if re.match(r"(PM_|KPF_|PAGE_SHIFT$|PAGE_SIZE$|MAX_FOLIO_ORDER$)", name):
            found[name] = _c_value(expr.split("//")[0].split("/*")[0])
    return found


def test_the_parser_reads_the_forms_the_c_file_uses() -> None:
    text = "#define PM_PRESENT (1ULL << 63)\n#define PM_PFN_MASK ((1ULL << 55) - 1)\n"
    text += "#define KPF_LRU 5  /* on an LRU list */\n#define HAVE_X 1\n"
    assert c_page_defines(text) == {
        "PM_PRESENT": 1 << 63,
        "PM_PFN_MASK": (1 << 55) - 1,
        "KPF_LRU": 5,
    }


def test_the_c_helper_page_constants_are_the_python_ones() -> None:
    sources = sorted((SRC / "pydamon").rglob("*.c"))
    assert sources, "the C helper's source moved: point this test at it"
    python = {"PAGE_SHIFT": PAGE_SHIFT, "PAGE_SIZE": PAGE_SIZE}
    python |= {
        n: v for n, v in vars(pagefacts).items() if re.match(r"(PM_|KPF_|MAX_FOLIO_ORDER$)", n)
    }
    checked = 0
    for src in sources:
        for name, value in c_page_defines(src.read_text()).items():
            assert name in python, f"{src.name} defines {name}, which pagefacts does not"
            assert value == python[name], (
                f"{src.name}: {name} = {value:#x}, Python {python[name]:#x}"
            )
            checked += 1
    assert checked >= 5  # PM_PRESENT, PM_PFN_MASK, KPF_LRU, KPF_COMPOUND_HEAD/TAIL at least
