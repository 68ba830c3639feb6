"""Readers of the kernel's memory layout files: ``/proc/PID/maps`` and ``/proc/iomem``.

Page-level facts (pagemap, kpageflags, kpagecgroup, page_idle) live in
:mod:`pydamon.ops.pagefacts`.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence
from dataclasses import dataclass

from pydamon.core.regions import PAGE_SIZE, align_down, align_up

#: Above the user address space (the [vsyscall] page lives there; int64 cannot hold it).
USER_ADDR_LIMIT = 1 << 63


# -- /proc/PID/maps ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mapping:
    """One line of ``/proc/PID/maps``."""

    start: int
    end: int
    perms: str = "rw-p"
    path: str = ""


def parse_maps(text: str) -> list[Mapping]:
    """Parse ``/proc/PID/maps`` text into mappings (sorted by address, as the kernel prints)."""
    out = []
    for line in text.splitlines():
        fields = line.split(None, 5)
        if len(fields) < 5:
            continue
        lo, _, hi = fields[0].partition("-")
        out.append(
            Mapping(int(lo, 16), int(hi, 16), fields[1], fields[5] if len(fields) > 5 else "")
        )
    return out


def read_maps(pid: int) -> list[Mapping]:
    """The mappings of process ``pid``; raises ``ProcessLookupError`` if it is gone."""
    return user_mappings(parse_maps(read_maps_text(pid)))


def read_maps_text(pid: int) -> str:
    """``/proc/PID/maps`` as text; raises ``ProcessLookupError`` if the process is gone."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return f.read()
    except FileNotFoundError:
        raise ProcessLookupError(errno.ESRCH, f"process {pid} does not exist") from None
    except ProcessLookupError:
        raise ProcessLookupError(errno.ESRCH, f"process {pid} exited") from None


def user_mappings(mappings: Sequence[Mapping]) -> list[Mapping]:
    """The process's own VMAs: without the ``[vsyscall]`` gate page, which is no VMA."""
    return [m for m in mappings if m.end <= USER_ADDR_LIMIT and m.path != "[vsyscall]"]


def three_regions(
    mappings: Sequence[Mapping] | Sequence[tuple[int, int]], min_region_sz: int = PAGE_SIZE
) -> list[tuple[int, int]] | None:
    """The kernel vaddr's three regions: all mappings minus the two biggest unmapped gaps.

    ``__damon_va_three_regions()``: ``[first.start, gap1.start)``, ``[gap1.end, gap2.start)``,
    ``[gap2.end, last.end)``, aligned outwards. A gap replaces the biggest only if strictly
    bigger (the earlier gap wins ties). None where the kernel fails (fewer than two gaps).
    """
    spans = [(m.start, m.end) if isinstance(m, Mapping) else (m[0], m[1]) for m in mappings]
    if not spans:
        return None
    first = second = (0, 0)
    prev_end = None
    for start, end in spans:
        if prev_end is not None:
            gap = start - prev_end
            if gap > first[1] - first[0]:
                second = first
                first = (prev_end, start)
            elif gap > second[1] - second[0]:
                second = (prev_end, start)
        prev_end = end
    assert prev_end is not None
    if first[1] == first[0] or second[1] == second[0]:
        return None
    gap1, gap2 = sorted((first, second))
    regions = [
        (align_down(spans[0][0], min_region_sz), align_up(gap1[0], min_region_sz)),
        (align_down(gap1[1], min_region_sz), align_up(gap2[0], min_region_sz)),
        (align_down(gap2[1], min_region_sz), align_up(prev_end, min_region_sz)),
    ]
    for i, (s, e) in enumerate(regions):
        if e <= s or (i and regions[i - 1][1] >= s):
            return None
    return regions


# -- /proc/iomem ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class IomemRange:
    start: int
    #: exclusive (iomem prints inclusive ends)
    end: int
    name: str
    depth: int


def parse_iomem(text: str) -> list[IomemRange]:
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        span, _, name = line.strip().partition(" : ")
        lo, _, hi = span.partition("-")
        try:
            out.append(IomemRange(int(lo, 16), int(hi, 16) + 1, name.strip(), depth))
        except ValueError:
            continue
    return out


def system_ram_ranges(text: str) -> list[tuple[int, int]]:
    """Top-level ``System RAM`` ranges of ``/proc/iomem`` text."""
    return [(r.start, r.end) for r in parse_iomem(text) if r.depth == 0 and r.name == "System RAM"]


def largest_system_ram(text: str) -> tuple[int, int] | None:
    """The biggest ``System RAM`` range (what DAMON_RECLAIM monitors by default)."""
    ranges = system_ram_ranges(text)
    if not ranges or all(s == 0 and e <= 1 for s, e in ranges):
        return None  # none, or addresses hidden (non-root readers see zeros)
    return max(ranges, key=lambda r: (r[1] - r[0], -r[0]))


# -- /proc/PID/smaps: where huge pages are ---------------------------------------------------------

#: smaps fields (kB) that count PMD-mapped huge pages in a mapping
SMAPS_HUGE_FIELDS = ("AnonHugePages:", "ShmemPmdMapped:", "FilePmdMapped:")


def parse_smaps(text: str) -> tuple[list[Mapping], list[tuple[int, int]]]:
    """``/proc/PID/smaps`` text: the mappings (as :func:`parse_maps` gives them), and those of
    them that map huge pages (a :data:`SMAPS_HUGE_FIELDS` field above 0 kB)."""
    header: list[str] = []
    huge: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for line in text.splitlines():
        first = line.split(None, 1)[0] if line else ""
        if first.endswith(":"):
            if current is not None and first in SMAPS_HUGE_FIELDS:
                fields = line.split()
                if len(fields) > 1 and fields[1] != "0" and (not huge or huge[-1] != current):
                    huge.append(current)
            continue
        if "-" in first:  # a mapping's header line, as in /proc/PID/maps
            header.append(line)
            lo, _, hi = first.partition("-")
            try:
                current = (int(lo, 16), int(hi, 16))
            except ValueError:
                current = None
    return user_mappings(parse_maps("\n".join(header))), huge


def read_smaps(pid: int) -> tuple[list[Mapping], list[tuple[int, int]]]:
    """:func:`parse_smaps` of process ``pid``; raises ``ProcessLookupError`` if it is gone.

    Costs a walk of the process's page tables in the kernel (milliseconds per GiB mapped):
    read at an ops update only, and only when :func:`thp_events` moved.
    """
    try:
        with open(f"/proc/{pid}/smaps") as f:
            text = f.read()
    except FileNotFoundError:
        raise ProcessLookupError(errno.ESRCH, f"process {pid} does not exist") from None
    except ProcessLookupError:
        raise ProcessLookupError(errno.ESRCH, f"process {pid} exited") from None
    return parse_smaps(text)


#: /proc/vmstat counters that move when a huge page is made or mapped anywhere in the system
THP_EVENTS = ("thp_fault_alloc", "thp_collapse_alloc", "thp_file_alloc", "thp_file_mapped")


def thp_events(vmstat: str = "/proc/vmstat") -> int:
    """The sum of the :data:`THP_EVENTS` counters (-1 if unreadable: assume they moved)."""
    try:
        with open(vmstat) as f:
            text = f.read()
    except OSError:
        return -1
    total = 0
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in THP_EVENTS:
            total += int(value)
    return total
