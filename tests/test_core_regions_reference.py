"""Regions' numpy operations against plain re-expressions of the kernel's loops.

``ref_merge_regions_of`` and ``ref_split_regions_of`` walk a list of region dicts exactly as
``damon_merge_regions_of()`` / ``damon_split_regions_of()`` walk the region list (one
``damon_rand(1, 10)`` draw per cut attempt, in region order). The vectorised implementations in
:class:`pydamon.core.Regions` must give identical regions, counters and random-stream use.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pydamon.core import BP, Regions
from pydamon.core.regions import FIELDS

Region = dict[str, int]


def ref_merge_two(l: Region, r: Region) -> None:  # noqa: E741 - the kernel's names
    sz_l, sz_r = l["end"] - l["start"], r["end"] - r["start"]
    l["nr_accesses"] = (l["nr_accesses"] * sz_l + r["nr_accesses"] * sz_r) // (sz_l + sz_r)
    l["nr_accesses_bp"] = l["nr_accesses"] * BP
    l["age"] = (l["age"] * sz_l + r["age"] * sz_r) // (sz_l + sz_r)
    l["end"] = r["end"]


def ref_merge_regions_of(regions: list[Region], thres: int, sz_limit: int) -> list[Region]:
    out: list[Region] = []
    prev = None
    for r in regions:
        r = dict(r)
        if abs(r["nr_accesses"] - r["last_nr_accesses"]) > thres:
            r["age"] = 0
        else:
            r["age"] += 1
        if (
            prev is not None
            and prev["end"] == r["start"]
            and abs(prev["nr_accesses"] - r["nr_accesses"]) <= thres
            and (prev["end"] - prev["start"]) + (r["end"] - r["start"]) <= sz_limit
        ):
            ref_merge_two(prev, r)
        else:
            out.append(r)
            prev = r
    return out


def ref_split_regions_of(
    regions: list[Region], nr_subs: int, rng: np.random.Generator, min_sz: int
) -> list[Region]:
    out: list[Region] = []
    for r in regions:
        pieces = [dict(r)]  # pieces[0] is the one being cut (the kernel's 'r')
        sz_region = r["end"] - r["start"]
        i = 0
        while i < nr_subs - 1 and sz_region > 2 * min_sz:
            i += 1
            sz_sub = int(rng.integers(1, 10)) * sz_region // 10
            sz_sub -= sz_sub % min_sz
            if sz_sub == 0 or sz_sub >= sz_region:
                continue
            left = pieces[0]
            new = dict(left)
            new["start"] = left["start"] + sz_sub
            left["end"] = new["start"]
            pieces.insert(1, new)
            sz_region = sz_sub
        out.extend(pieces)
    return out


def as_dicts(regions: Regions) -> list[Region]:
    cols = {name: getattr(regions, name).tolist() for name in FIELDS}
    return [{name: cols[name][i] for name in FIELDS} for i in range(len(regions))]


def from_dicts(dicts: list[Region]) -> Regions:
    r = Regions([(d["start"], d["end"]) for d in dicts])
    for name in FIELDS:
        setattr(r, name, np.asarray([d[name] for d in dicts], dtype=np.int64))
    return r


def make_dicts(seed: int, n: int, p_gap: float, max_nr: int, max_pages: int = 50):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, max_pages + 1, n) * 4096
    gaps = np.where(rng.random(n) < p_gap, rng.integers(1, 8, n) * 4096, 0)
    starts = 4096 * int(rng.integers(0, 1000)) + np.cumsum(sizes + gaps) - sizes
    nr = rng.integers(0, max_nr + 1, n)
    return [
        {
            "start": int(s),
            "end": int(s + z),
            "sampling_addr": int(s + off % z),
            "nr_accesses": int(a),
            "nr_accesses_bp": int(a) * BP + int(extra),
            "last_nr_accesses": int(b),
            "age": int(g),
        }
        for s, z, off, a, extra, b, g in zip(
            starts,
            sizes,
            rng.integers(0, 2**40, n),
            nr,
            rng.choice([0, 0, 1, 3333], n),
            rng.integers(0, max_nr + 1, n),
            rng.integers(0, 100, n),
        )
    ]


@st.composite
def region_lists(draw):
    return make_dicts(
        draw(st.integers(0, 2**32)),
        draw(st.integers(0, 60)),
        draw(st.sampled_from([0.0, 0.1, 0.5])),
        draw(st.sampled_from([1, 5, 20, 200])),
    )


@settings(max_examples=100, deadline=None)
@given(region_lists(), st.integers(0, 60), st.integers(1, 120))
def test_merge_regions_matches_the_kernel_loop(dicts, thres, limit_pages):
    sz_limit = limit_pages * 4096
    regions = from_dicts(dicts)
    regions.merge_regions(thres, sz_limit)
    assert as_dicts(regions) == ref_merge_regions_of(dicts, thres, sz_limit)


@settings(max_examples=100, deadline=None)
@given(region_lists(), st.integers(1, 4), st.integers(0, 2**32), st.sampled_from([1, 4096]))
def test_split_regions_matches_the_kernel_loop(dicts, nr_subs, seed, min_sz):
    regions = from_dicts(dicts)
    rng_a, rng_b = np.random.default_rng(seed), np.random.default_rng(seed)
    regions.split_regions(nr_subs, rng_a, min_sz)
    expect = ref_split_regions_of(dicts, nr_subs, rng_b, min_sz)
    assert as_dicts(regions) == expect
    # the generator was used exactly as the kernel loop uses damon_rand()
    assert rng_a.integers(0, 2**62) == rng_b.integers(0, 2**62)


def test_merge_regions_of_large_input_matches():
    dicts = make_dicts(11, 1500, 0.05, 20, max_pages=8)
    for thres, limit in [(0, 10**12), (2, 16 * 4096), (5, 10**12), (30, 4096)]:
        regions = from_dicts(dicts)
        regions.merge_regions(thres, limit)
        assert as_dicts(regions) == ref_merge_regions_of(dicts, thres, limit)
