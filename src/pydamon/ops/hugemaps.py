"""Where a process's huge pages may be: the address ranges whose access checks read kpageflags.

page_idle tracks a transparent huge page (any large folio) through its head frame only: a tail
frame's bit can be neither set nor read (it reads "not idle", as if accessed). So a sampling
address in a huge page must be mapped to its head through ``/proc/kpageflags`` before its bit
is set (:mod:`pydamon.ops._native`); elsewhere that read is wasted, one system call per
region-sample of the four a check costs.

:class:`HugeMappings` keeps, per target, the mappings that may hold huge pages:

- at each ops update, the mappings whose ``/proc/PID/smaps`` counts PMD-mapped huge pages
  (``AnonHugePages``, ``ShmemPmdMapped``, ``FilePmdMapped`` above 0). smaps walks the page
  tables (milliseconds per GiB mapped), so it is re-read only when the system's THP counters
  in ``/proc/vmstat`` moved since the last read (no THP made or mapped anywhere: none new here),
  and no sooner than :data:`SMAPS_COST_RATIO` times the last read's duration after it (smaps
  stays within 0.1% of a CPU however big the process; the maps are read meanwhile);
- mappings where a check met a huge page nobody knew of (a THP made between updates, a
  PTE-mapped large folio smaps does not count, an mTHP, a large page-cache folio): the access
  check verifies a frame it did not look up whenever its bit reads "accessed", finds the tail
  there, counts that sample not accessed and reports the address; its mapping is added at once
  and stays (by its start address) for as long as it exists.

The cost of the trade-off: one sample of one region read "not accessed" per mapping that gains
huge pages unseen, against one kpageflags read per region-sample everywhere else. ``THPeligible``
is not used: with THP ``always`` every anonymous mapping is eligible, which would keep the read
nearly everywhere.
"""

from __future__ import annotations

import time

import numpy as np

from pydamon.ops import _proc, pagefacts

IntArray = pagefacts.IntArray

#: an smaps read waits at least this many times the last one's duration after it
SMAPS_COST_RATIO = 1000


class HugeMappings:
    """The address ranges of one process where huge pages may be (see the module doc)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        #: the mappings of the last smaps or maps read (sorted, disjoint)
        self.mappings: list[_proc.Mapping] = []
        #: ranges with huge pages in the last smaps read
        self._from_smaps: list[tuple[int, int]] = []
        #: start addresses of mappings where a check met an unknown huge page
        self._seen: set[int] = set()
        #: huge-page spans met outside every known mapping (until a mapping holds them)
        self._spans_seen: set[tuple[int, int]] = set()
        self._events = -2  # never read
        #: when the next smaps read may be (time.monotonic())
        self._next_smaps = 0.0
        #: number of smaps reads so far, and of maps reads found unchanged (not parsed again)
        self.nr_smaps_reads = 0
        self.nr_maps_unchanged = 0
        #: the last maps text parsed (None: none, or an smaps read came since)
        self._maps_text: str | None = None
        #: the ranges, flat ``[start0, end0, start1, end1, ...]`` (what the C helper takes)
        self.ranges: IntArray = np.zeros(0, np.int64)

    def update(self) -> list[_proc.Mapping]:
        """At an ops update: re-read smaps if huge pages may have been made since; returns the
        mappings (raises ``ProcessLookupError`` if the process is gone)."""
        events = _proc.thp_events()
        now = time.monotonic()
        if (events == -1 or events != self._events) and now >= self._next_smaps:
            self.mappings, self._from_smaps = _proc.read_smaps(self.pid)
            self.nr_smaps_reads += 1
            self._events = events
            self._next_smaps = now + SMAPS_COST_RATIO * (time.monotonic() - now)
            self._maps_text = None  # the next maps read parses again
        else:
            text = _proc.read_maps_text(self.pid)
            if text == self._maps_text:
                # unchanged (the common case at each ops update): neither parse nor rebuild;
                # a server's maps run to hundreds of lines, parsing them costs the interpreter
                self.nr_maps_unchanged += 1
                return self.mappings
            self._maps_text = text
            self.mappings = _proc.user_mappings(_proc.parse_maps(text))
        self._rebuild()
        return self.mappings

    def tails_seen(self, addrs: IntArray) -> None:
        """A check met huge pages at ``addrs`` that no range held: add their mappings."""
        starts = np.array([m.start for m in self.mappings], np.int64)
        ends = np.array([m.end for m in self.mappings], np.int64)
        for addr in addrs.tolist():
            i = int(np.searchsorted(starts, addr, side="right")) - 1
            if i >= 0 and addr < ends[i]:
                self._seen.add(int(starts[i]))
            else:  # in no mapping known (mapped since the last update): its huge page's span
                lo = addr & ~(pagefacts.HPAGE_PMD_SIZE - 1)
                self._spans_seen.add((lo, lo + pagefacts.HPAGE_PMD_SIZE))
        self._rebuild()

    def _rebuild(self) -> None:
        live = {m.start for m in self.mappings}
        self._seen &= live
        for span in list(self._spans_seen):  # now in a known mapping: that mapping stays
            owner = next((m for m in self.mappings if m.start <= span[0] < m.end), None)
            if owner is not None:
                self._seen.add(owner.start)
                self._spans_seen.discard(span)
        spans = set(self._from_smaps) | self._spans_seen
        spans.update((m.start, m.end) for m in self.mappings if m.start in self._seen)
        merged: list[list[int]] = []
        for lo, hi in sorted(spans):
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self.ranges = np.array([x for span in merged for x in span], np.int64)
