"""Monitoring target regions, kept as a structure of numpy arrays.

The per-sample work (picking sampling addresses, counting accesses, the nr_accesses_bp moving
sum) is vectorised over all regions of a target, so it costs a few numpy calls per target
regardless of the number of regions. Structural changes (merge, split, set_regions) happen once
per aggregation or ops update and rebuild the arrays.

The semantics follow the kernel's ``mm/damon/core.c`` (``damon_split_region_at``,
``damon_merge_two_regions``, ``damon_merge_regions_of``, ``damon_split_regions_of``,
``damon_set_regions``) and ``vaddr.c`` (``damon_va_evenly_split_region``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pydamon.core.attrs import BP

#: log2 of the page size (x86-64, arm64 with 4 KiB pages): the one definition in pydamon.
PAGE_SHIFT = 12
#: DAMON_MIN_REGION: every region boundary is aligned to a page.
PAGE_SIZE = 1 << PAGE_SHIFT

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

FIELDS = (
    "start",
    "end",
    "sampling_addr",
    "nr_accesses",
    "nr_accesses_bp",
    "last_nr_accesses",
    "age",
)


def align_down(value: int, alignment: int) -> int:
    return value - value % alignment


def align_up(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment


@dataclass
class Region:
    """One region as plain data (a copy; change regions through :class:`Regions`)."""

    start: int
    end: int
    nr_accesses: int = 0
    age: int = 0
    nr_accesses_bp: int = 0
    last_nr_accesses: int = 0
    sampling_addr: int = 0

    @property
    def size(self) -> int:
        return self.end - self.start


class Regions:
    """The regions of one target: sorted, non-overlapping ``[start, end)`` address ranges.

    Each attribute in :data:`FIELDS` is an ``int64`` numpy array of the same length. Arrays are
    replaced (not resized in place) by structural changes, so hold on to the ``Regions`` object,
    not to its arrays.
    """

    __slots__ = FIELDS

    start: IntArray
    end: IntArray
    sampling_addr: IntArray
    nr_accesses: IntArray
    nr_accesses_bp: IntArray
    last_nr_accesses: IntArray
    age: IntArray

    def __init__(self, ranges: Sequence[tuple[int, int]] = ()) -> None:
        n = len(ranges)
        starts = np.fromiter((r[0] for r in ranges), dtype=np.int64, count=n)
        ends = np.fromiter((r[1] for r in ranges), dtype=np.int64, count=n)
        self._assign(
            start=starts,
            end=ends,
            sampling_addr=starts.copy(),
            nr_accesses=np.zeros(n, np.int64),
            nr_accesses_bp=np.zeros(n, np.int64),
            last_nr_accesses=np.zeros(n, np.int64),
            age=np.zeros(n, np.int64),
        )

    # -- construction helpers -------------------------------------------------------------
    def _assign(self, **arrays: IntArray) -> None:
        for name in FIELDS:
            object.__setattr__(self, name, np.ascontiguousarray(arrays[name], dtype=np.int64))

    @classmethod
    def from_regions(cls, regions: Sequence[Region]) -> Regions:
        out = cls()
        out._assign(
            **{
                name: np.fromiter(
                    (getattr(r, name) for r in regions), dtype=np.int64, count=len(regions)
                )
                for name in FIELDS
            }
        )
        return out

    def copy(self) -> Regions:
        out = Regions()
        out._assign(**{name: getattr(self, name).copy() for name in FIELDS})
        return out

    def _columns(self) -> dict[str, list[int]]:
        return {name: getattr(self, name).tolist() for name in FIELDS}

    def _set_columns(self, cols: dict[str, list[int]]) -> None:
        self._assign(**{name: np.asarray(cols[name], dtype=np.int64) for name in FIELDS})

    # -- plain accessors --------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.start.shape[0])

    def __getitem__(self, index: int) -> Region:
        return Region(**{name: int(getattr(self, name)[index]) for name in FIELDS})

    def __iter__(self) -> Iterator[Region]:
        cols = self._columns()
        for i in range(len(self)):
            yield Region(**{name: cols[name][i] for name in FIELDS})

    def __repr__(self) -> str:
        body = ", ".join(
            f"[{s:#x}, {e:#x}): {n}/{a}"
            for s, e, n, a in zip(
                self.start.tolist(), self.end.tolist(), self.nr_accesses.tolist(), self.age.tolist()
            )
        )
        return f"Regions({body})"

    @property
    def sizes(self) -> IntArray:
        return self.end - self.start

    @property
    def total_size(self) -> int:
        return int(self.sizes.sum())

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self.start.tolist(), self.end.tolist()))

    # -- per-sample work (vectorised) ------------------------------------------------------
    def pick_sampling_addrs(self, rng: np.random.Generator) -> IntArray:
        """Set a random sampling address in each region (``damon_rand(start, end)``)."""
        if len(self):
            # A uniform float scaled by the size is ~3x cheaper than integers() with per-region
            # bounds. float64 keeps it exact enough: sizes stay far below 2**53 bytes, and
            # random() < 1 keeps the offset strictly below the size.
            offsets = rng.random(len(self)) * self.sizes
            self.sampling_addr = self.start + offsets.astype(np.int64)
        return self.sampling_addr

    def update_access_rate(self, accessed: BoolArray, max_nr_accesses: int) -> None:
        """``damon_update_region_access_rate()`` for every region at once.

        nr_accesses_bp is a pseudo moving sum over the last ``max_nr_accesses`` samples: each
        sample drops one window's share of the last aggregation's count and adds the new one.
        """
        len_window = max(max_nr_accesses, 1)
        hit = accessed.astype(np.int64)
        bp = self.nr_accesses_bp - (self.last_nr_accesses * BP) // len_window + hit * BP
        # Unsigned in the kernel; a negative moving sum can only come from inconsistent input.
        np.maximum(bp, 0, out=bp)
        self.nr_accesses_bp = bp
        self.nr_accesses = self.nr_accesses + hit

    def reset_aggregated(self) -> None:
        """Start a new aggregation: ``last_nr_accesses = nr_accesses; nr_accesses = 0``.

        Like ``kdamond_reset_aggregated()`` (``damon_warn_fix_nr_accesses_corruption()``), the
        moving sum is first re-synchronised to ``nr_accesses * 10000``: the pseudo moving sum
        drifts when ``max_nr_accesses`` does not divide ``last_nr_accesses * 10000``.
        """
        self.nr_accesses_bp = self.nr_accesses * BP
        self.last_nr_accesses = self.nr_accesses
        self.nr_accesses = np.zeros(len(self), np.int64)

    def update_monitoring_results(
        self,
        old_max_nr_accesses: int,
        new_max_nr_accesses: int,
        age_scale: tuple[int, int],
        aggregating: bool,
    ) -> None:
        """``damon_update_monitoring_result()`` for every region at once.

        nr_accesses is converted through its access ratio in bp
        (``nr * 10000 // old_max * new_max // 10000``); ``age`` is multiplied by
        ``age_scale[0] / age_scale[1]`` (old / new aggregation interval). In the middle of an
        aggregation (``aggregating``) the partial counts are dropped as if
        ``kdamond_reset_aggregated()`` had just run, and ``last_nr_accesses`` is converted.
        """
        if not len(self):
            return

        def convert(nr: IntArray) -> IntArray:
            return (nr * BP // old_max_nr_accesses) * new_max_nr_accesses // BP

        if not aggregating:
            self.nr_accesses = convert(self.nr_accesses)
            self.nr_accesses_bp = self.nr_accesses * BP
        else:
            self.last_nr_accesses = convert(self.last_nr_accesses)
            self.nr_accesses_bp = self.last_nr_accesses * BP
            self.nr_accesses = np.zeros(len(self), np.int64)
        self.age = self.age * age_scale[0] // age_scale[1]

    # -- structural changes -------------------------------------------------------------------
    def split_at(self, index: int, sz_left: int) -> None:
        """Split region ``index`` so its left piece is ``sz_left`` bytes (damon_split_region_at).

        The new right piece inherits every attribute but its start.
        """
        start = int(self.start[index])
        if not 0 < sz_left < int(self.end[index]) - start:
            raise ValueError(f"cannot split a region of {self.sizes[index]} bytes at {sz_left}")
        arrays = {}
        for name in FIELDS:
            col = getattr(self, name)
            arrays[name] = np.insert(col, index + 1, col[index])
        arrays["end"][index] = start + sz_left
        arrays["start"][index + 1] = start + sz_left
        self._assign(**arrays)

    def merge_two(self, index: int) -> None:
        """Merge region ``index`` with the one after it (damon_merge_two_regions).

        nr_accesses and age become size-weighted averages; nr_accesses_bp follows nr_accesses.
        """
        cols = self._columns()
        _merge_two_in(cols, index)
        self._set_columns(cols)

    def evenly_split(self, index: int, nr_pieces: int, min_region_sz: int = PAGE_SIZE) -> None:
        """Split region ``index`` into ``nr_pieces`` equal, aligned pieces.

        The kernel's ``damon_va_evenly_split_region()``: exactly ``nr_pieces`` pieces of
        ``ALIGN_DOWN(size / nr_pieces)`` bytes, the last one absorbing the rounding remainder.
        The first piece keeps the region's monitoring results; the others are new regions
        (``damon_new_region()``: all counters zero). Raises ``ValueError`` where the kernel
        returns -EINVAL (no pieces, or pieces smaller than ``min_region_sz``).
        """
        if nr_pieces <= 0:
            raise ValueError("nr_pieces must be positive")
        if nr_pieces == 1:
            return
        start = int(self.start[index])
        orig_end = int(self.end[index])
        sz_piece = align_down((orig_end - start) // nr_pieces, min_region_sz)
        if sz_piece == 0:
            raise ValueError(
                f"a region of {orig_end - start} bytes is too small to split into "
                f"{nr_pieces} pieces of at least {min_region_sz} bytes"
            )
        starts = start + sz_piece * np.arange(nr_pieces, dtype=np.int64)
        ends = starts + sz_piece
        ends[-1] = orig_end
        arrays = {}
        for name in FIELDS:
            col = getattr(self, name)
            fresh = np.zeros(nr_pieces, np.int64)
            fresh[0] = col[index]
            arrays[name] = np.concatenate((col[:index], fresh, col[index + 1 :]))
        arrays["start"][index : index + nr_pieces] = starts
        arrays["end"][index : index + nr_pieces] = ends
        arrays["sampling_addr"][index + 1 : index + nr_pieces] = starts[1:]
        self._assign(**arrays)

    def merge_regions(self, threshold: int, sz_limit: int) -> None:
        """One ``damon_merge_regions_of()`` pass: update ages, merge similar neighbours.

        Walking regions in order, a region merges into the previous (possibly already merged)
        one if they are adjacent, their nr_accesses differ by at most ``threshold`` and their
        summed size is at most ``sz_limit``; merged nr_accesses and age are size-weighted
        averages computed pairwise with integer division, as the kernel does.
        """
        n = len(self)
        if not n:
            return
        self.age = np.where(
            np.abs(self.nr_accesses - self.last_nr_accesses) > threshold, 0, self.age + 1
        )
        if n == 1:
            return
        start, end = self.start, self.end
        sizes = end - start
        # A pair can only merge if adjacent and small enough even before any merge (a merged
        # left region is only bigger); only such pairs need the sequential walk.
        candidates = np.flatnonzero((end[:-1] == start[1:]) & (sizes[:-1] + sizes[1:] <= sz_limit))
        if not candidates.size:
            return
        nr_col = self.nr_accesses.tolist()
        age_col = self.age.tolist()
        size_col = sizes.tolist()
        groups: list[tuple[int, int, int, int]] = []  # first, last, nr_accesses, age
        last = -1
        g_first = g_nr = g_age = g_size = 0
        for i in candidates.tolist():
            if last != i:  # region i is not merged into anything: it starts a group
                if last > g_first:
                    groups.append((g_first, last, g_nr, g_age))
                g_first, last = i, i
                g_nr, g_age, g_size = nr_col[i], age_col[i], size_col[i]
            j = i + 1
            sz = size_col[j]
            if abs(g_nr - nr_col[j]) <= threshold and g_size + sz <= sz_limit:
                total = g_size + sz
                g_nr = (g_nr * g_size + nr_col[j] * sz) // total
                g_age = (g_age * g_size + age_col[j] * sz) // total
                g_size = total
                last = j
        if last > g_first:
            groups.append((g_first, last, g_nr, g_age))
        if not groups:
            return
        g = np.asarray(groups, dtype=np.int64)
        firsts, lasts = g[:, 0], g[:, 1]
        nr_accesses = self.nr_accesses.copy()
        nr_accesses[firsts] = g[:, 2]
        nr_accesses_bp = self.nr_accesses_bp.copy()
        nr_accesses_bp[firsts] = g[:, 2] * BP
        age = self.age
        age[firsts] = g[:, 3]
        new_end = end.copy()
        new_end[firsts] = end[lasts]
        # drop every region merged into its group's first one
        drop = np.zeros(n + 1, np.int64)
        np.add.at(drop, firsts + 1, 1)
        np.add.at(drop, lasts + 1, -1)
        keep = np.cumsum(drop[:n]) == 0
        self._assign(
            start=start[keep],
            end=new_end[keep],
            sampling_addr=self.sampling_addr[keep],
            nr_accesses=nr_accesses[keep],
            nr_accesses_bp=nr_accesses_bp[keep],
            last_nr_accesses=self.last_nr_accesses[keep],
            age=age[keep],
        )

    def split_regions(
        self, nr_subs: int, rng: np.random.Generator, min_region_sz: int = PAGE_SIZE
    ) -> None:
        """``damon_split_regions_of()``: split each region into up to ``nr_subs`` pieces.

        For each region bigger than two ``min_region_sz``, up to ``nr_subs - 1`` times: the
        piece being cut (the left one) is cut at a random 10%..90% of its size (aligned down);
        a cut that would leave an empty piece is skipped. Pieces inherit every counter.
        ``rng`` is used exactly as the kernel's loop uses ``damon_rand(1, 10)``: one draw per
        cut attempt, region by region (numpy gives the same values drawn one by one or in a
        batch, so the draws are made in a batch).
        """
        n = len(self)
        if not n or nr_subs < 2:
            return
        start = self.start
        sizes = self.end - start
        eligible = np.flatnonzero(sizes > 2 * min_region_sz)
        if not eligible.size:
            return
        if nr_subs == 2:
            sz = sizes[eligible]
            sz_sub = rng.integers(1, 10, size=eligible.size) * sz // 10
            sz_sub -= sz_sub % min_region_sz
            ok = (sz_sub > 0) & (sz_sub < sz)
            cuts = start[eligible[ok]] + sz_sub[ok]
        else:
            # How many draws a region takes depends on its earlier draws: draw the most that
            # can be needed, use them in order, then rewind and draw only as many as used.
            state = rng.bit_generator.state
            draws = rng.integers(1, 10, size=eligible.size * (nr_subs - 1)).tolist()
            used = 0
            cut_list: list[int] = []
            starts_l = start[eligible].tolist()
            for r_start, sz_region in zip(starts_l, sizes[eligible].tolist()):
                for _ in range(nr_subs - 1):
                    if sz_region <= 2 * min_region_sz:
                        break
                    sz_sub = draws[used] * sz_region // 10
                    used += 1
                    sz_sub -= sz_sub % min_region_sz
                    if sz_sub == 0 or sz_sub >= sz_region:
                        continue
                    cut_list.append(r_start + sz_sub)
                    sz_region = sz_sub
            rng.bit_generator.state = state
            rng.integers(1, 10, size=used)
            cuts = np.asarray(cut_list, dtype=np.int64)
        if not cuts.size:
            return
        new_start = np.sort(np.concatenate((start, cuts)))
        owner = np.searchsorted(start, new_start, side="right") - 1
        next_start = np.empty_like(new_start)
        next_start[:-1] = new_start[1:]
        next_start[-1] = np.iinfo(np.int64).max
        arrays = {name: getattr(self, name)[owner] for name in FIELDS}
        arrays["start"] = new_start
        arrays["end"] = np.minimum(next_start, self.end[owner])
        self._assign(**arrays)

    def set_regions(
        self, ranges: Sequence[tuple[int, int]], min_region_sz: int = PAGE_SIZE
    ) -> None:
        """``damon_set_regions()``: make the regions cover exactly ``ranges``.

        Regions intersecting no range are dropped; the first and last region intersecting each
        range are stretched or shrunk to its (aligned) bounds; holes inside a range are filled with
        new regions. Surviving regions keep their monitoring results.
        """
        cols = self._columns()
        keep = [
            i
            for i in range(len(self))
            if any(
                cols["start"][i] < r_end and r_start < cols["end"][i] for r_start, r_end in ranges
            )
        ]
        regions = [{name: cols[name][i] for name in FIELDS} for i in keep]
        out: list[dict[str, int]] = []
        ri = 0
        for r_start, r_end in sorted(ranges):
            a_start = align_down(r_start, min_region_sz)
            a_end = align_up(r_end, min_region_sz)
            # regions entirely before this range stay where they are
            while ri < len(regions) and regions[ri]["end"] <= r_start:
                out.append(regions[ri])
                ri += 1
            inside = []
            while ri < len(regions) and regions[ri]["start"] < r_end:
                inside.append(regions[ri])
                ri += 1
            if not inside:
                out.append(_new_region(a_start, a_end))
                continue
            inside[0]["start"] = a_start
            inside[-1]["end"] = a_end
            for j, region in enumerate(inside):
                if j and out[-1]["end"] != region["start"]:
                    out.append(_new_region(out[-1]["end"], region["start"]))
                out.append(region)
        out.extend(regions[ri:])
        self._set_columns({name: [r[name] for r in out] for name in FIELDS})

    def check_invariants(self, min_region_sz: int = PAGE_SIZE) -> None:
        """Raise AssertionError unless regions are sorted, non-empty, disjoint and aligned."""
        s, e = self.start, self.end
        assert np.all(s < e), "empty region"
        assert np.all(e[:-1] <= s[1:]), "regions overlap or are unsorted"
        assert np.all(s % min_region_sz == 0) and np.all(e % min_region_sz == 0), "unaligned"


def _new_region(start: int, end: int) -> dict[str, int]:
    return {
        "start": start,
        "end": end,
        "sampling_addr": start,
        "nr_accesses": 0,
        "nr_accesses_bp": 0,
        "last_nr_accesses": 0,
        "age": 0,
    }


def _merge_two_in(cols: dict[str, list[int]], index: int) -> None:
    """Merge entry ``index + 1`` into ``index`` in column lists (damon_merge_two_regions)."""
    sz_l = cols["end"][index] - cols["start"][index]
    sz_r = cols["end"][index + 1] - cols["start"][index + 1]
    total = sz_l + sz_r
    nr = (cols["nr_accesses"][index] * sz_l + cols["nr_accesses"][index + 1] * sz_r) // total
    cols["nr_accesses"][index] = nr
    cols["nr_accesses_bp"][index] = nr * BP
    cols["age"][index] = (cols["age"][index] * sz_l + cols["age"][index + 1] * sz_r) // total
    cols["end"][index] = cols["end"][index + 1]
    for name in FIELDS:
        del cols[name][index + 1]
