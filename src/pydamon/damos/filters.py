"""DAMOS filters: the kernel's matching rules over arrays of page facts.

Rules (``mm/damon/core.c``, ``ops-common.c``): core filters (``addr``, ``target``) are evaluated
on regions by the engine, ops filters (``anon``, ``active``, ``memcg``, ``young``,
``hugepage_size``, ``unmapped``) per page (folio) by the operations set. In each group the first
filter that matches decides (``allow`` applies, otherwise skip); memory no filter matched gets the
opposite of the last filter's ``allow``. A region a core filter explicitly allowed is allowed by
the ops filters too; with any ops filter installed, the core group's default is "allow" so the ops
filters get to decide.

Operations sets read the facts of their pages into a :class:`PageFacts` (see
:mod:`pydamon.ops.pagefacts`) and ask :func:`ops_filters_pass` which pages pass; nothing here
reads the system.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pydamon.core.regions import PAGE_SIZE
from pydamon.damos.scheme import Filter, FilterType, Scheme

BoolArray = npt.NDArray[np.bool_]


class FilterUnsupported(RuntimeError):
    """An ops filter needs a page fact this system or operations set cannot provide."""


def filters_default_reject(filters: Sequence[Filter]) -> bool:
    """``damos_filters_default_reject()``: reject unmatched memory iff the last filter allows."""
    return bool(filters) and filters[-1].allow


def set_filters_default_reject(scheme: Scheme) -> None:
    """``damos_set_filters_default_reject()``."""
    ops = scheme.ops_filters
    scheme.core_filters_default_reject = (
        False if ops else filters_default_reject(scheme.core_filters)
    )
    scheme.ops_filters_default_reject = filters_default_reject(ops)


@dataclass
class PageFacts:
    """Facts about consecutive pages (one entry per 4 KiB page) the ops filters look at.

    A fact left ``None`` was not collected; a filter that needs it raises
    :class:`FilterUnsupported`. ``present`` pages are backed by memory; non-present pages
    (swapped out, never touched) pass no ops filter and are not acted on.
    """

    present: BoolArray
    anon: BoolArray | None = None
    active: BoolArray | None = None
    #: cgroup v2 inode number of each page's memcg (``/proc/kpagecgroup``), 0 if none.
    memcg_ino: npt.NDArray[np.int64] | None = None
    young: BoolArray | None = None
    #: Size of the folio each page belongs to (bytes).
    folio_size: npt.NDArray[np.int64] | None = None
    unmapped: BoolArray | None = None

    def __len__(self) -> int:
        return int(self.present.shape[0])


def filter_match(
    f: Filter, facts: PageFacts, memcg_inos: dict[str, int] | None = None
) -> BoolArray:
    """``damos_folio_filter_match()`` for every page: does the page match filter ``f``?"""
    if f.type == FilterType.ANON:
        matched = _need(facts.anon, f)
    elif f.type == FilterType.ACTIVE:
        matched = _need(facts.active, f)
    elif f.type == FilterType.MEMCG:
        inos = _need(facts.memcg_ino, f)
        path = f.memcg_path or ""
        ino = (memcg_inos or {}).get(path)
        if ino is None:
            raise FilterUnsupported(
                f"memcg filter: the cgroup {path!r} was not resolved to its inode number"
            )
        matched = inos == ino
    elif f.type == FilterType.YOUNG:
        matched = _need(facts.young, f)
    elif f.type == FilterType.HUGEPAGE_SIZE:
        sizes = _need(facts.folio_size, f)
        matched = (f.min_sz <= sizes) & (sizes <= f.max_sz)
    elif f.type == FilterType.UNMAPPED:
        matched = _need(facts.unmapped, f)
    else:
        raise ValueError(f"{f.type} is a core filter, not evaluated per page")
    matched = np.asarray(matched, dtype=bool)
    return matched if f.matching else ~matched


def _need(values: Any, f: Filter) -> Any:
    if values is None:
        raise FilterUnsupported(
            f"the {f.type} filter needs page information this operations set does not collect"
        )
    return values


def ops_filters_pass(
    scheme: Scheme,
    facts: PageFacts,
    memcg_inos: dict[str, int] | None = None,
    *,
    extra_filters: Sequence[Filter] = (),
) -> BoolArray:
    """Which pages pass ``scheme``'s ops filters (``damos_pa_filter_out()`` negated).

    Non-present pages never pass. If the region's core filters explicitly allowed it
    (``scheme.core_filters_allowed``), every present page passes. ``extra_filters`` are
    evaluated after the scheme's own, as an action's temporary filters are in the kernel (paddr
    pageout's reject-young filter); the default for unmatched pages stays the scheme's.
    """
    present = np.asarray(facts.present, dtype=bool)
    if scheme.core_filters_allowed:
        return present.copy()
    ops = [*scheme.ops_filters, *extra_filters]
    decided = np.zeros(len(facts), dtype=bool)
    passed = np.zeros(len(facts), dtype=bool)
    for f in ops:
        matched = filter_match(f, facts, memcg_inos) & ~decided
        passed[matched] = f.allow
        decided |= matched
    passed[~decided] = not scheme.ops_filters_default_reject
    return passed & present


def needed_facts(filters: Iterable[Filter]) -> set[FilterType]:
    """The page facts ``filters`` look at: one per ops filter type."""
    return {f.type for f in filters if not f.handled_by_core}


def passing_ranges(start: int, passed: BoolArray) -> list[tuple[int, int]]:
    """Address ranges of the runs of passing pages (``passed[i]`` is page ``start + i*4K``)."""
    if not passed.shape[0]:
        return []
    edges = np.flatnonzero(np.diff(np.concatenate(([0], passed.astype(np.int8), [0]))))
    return [
        (start + int(lo) * PAGE_SIZE, start + int(hi) * PAGE_SIZE)
        for lo, hi in zip(edges[::2], edges[1::2])
    ]
