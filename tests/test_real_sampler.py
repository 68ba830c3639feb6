"""The whole-sample C path of the real operations sets (``_native.Sampler``) against the core's
numpy methods: same addresses checked, same counts, on plain files standing in for kpageflags
and the idle bitmap (no root, no page_idle needed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pydamon.core.regions import Regions
from pydamon.ops import _native, pagefacts

pytestmark = pytest.mark.skipif(
    _native.load() is None, reason=f"only the Python path here: {_native.status().why}"
)

NR_PFNS = 8192


def _phys(tmp_path: Path) -> pagefacts.PhysPages:
    """paddr-style PhysPages on files: every page on the LRU but a THP's tails and PFN 7."""
    flags = np.full(NR_PFNS, 1 << pagefacts.KPF_LRU, np.uint64)
    flags[1024] |= np.uint64(1 << pagefacts.KPF_COMPOUND_HEAD)
    flags[1025:1536] = np.uint64(1 << pagefacts.KPF_COMPOUND_TAIL)
    flags[7] = 0
    (tmp_path / "kpf").write_bytes(flags.tobytes())
    (tmp_path / "bitmap").write_bytes(b"")
    phys = pagefacts.PhysPages.__new__(pagefacts.PhysPages)
    phys.kpageflags_fd = os.open(tmp_path / "kpf", os.O_RDONLY)
    phys.bitmap_fd = os.open(tmp_path / "bitmap", os.O_RDWR)
    return phys


def _regions() -> Regions:
    # physical addresses: small and big regions, one inside the THP, one past kpageflags' end
    ranges = [(0, 4096), (4096, 64 << 12), (64 << 12, 1030 << 12), (1030 << 12, 1536 << 12)]
    ranges += [(1536 << 12, 6000 << 12), (6000 << 12, NR_PFNS << 12), (NR_PFNS << 12, 9000 << 12)]
    return Regions(ranges)


def test_sampler_matches_the_numpy_path(tmp_path: Path) -> None:
    phys = _phys(tmp_path)
    try:
        native = _native.Sampler(np.random.default_rng(3), native=True)
        regions, reference = _regions(), _regions()
        pattern_rng = np.random.default_rng(4)
        window = 20
        for sample in range(60):
            if sample == 30:  # as after an aggregation: counts move to last_nr_accesses
                regions.reset_aggregated()
                reference.reset_aggregated()
            native.pick_prepare(phys, None, regions)
            addrs = regions.sampling_addr
            assert ((addrs >= regions.start) & (addrs < regions.end)).all()
            # the same steps through the Python path, on the addresses the C draw picked
            pfns = _native.prepare(phys, None, addrs, native=False)
            assert np.array_equal(native.pfns, pfns)
            # the bitmap: a random pattern of idle bits, read back by both
            pattern = pattern_rng.integers(0, 2**63, NR_PFNS // 64 + 1, dtype=np.int64)
            os.pwrite(phys.bitmap_fd, pattern.astype(np.uint64).tobytes(), 0)
            accessed = _native.check(phys, pfns, native=False)
            reference.update_access_rate(accessed, window)
            max_nr = native.check_update(phys, regions, window)
            assert max_nr == int(reference.nr_accesses.max())
            assert np.array_equal(regions.nr_accesses, reference.nr_accesses)
            assert np.array_equal(regions.nr_accesses_bp, reference.nr_accesses_bp)
        assert regions.nr_accesses.any() and not (pfns >= 0).all()  # both kinds were seen
    finally:
        phys.close()


def test_sampler_is_reproducible_from_the_seed_and_follows_region_changes(
    tmp_path: Path,
) -> None:
    phys = _phys(tmp_path)
    try:
        picks = []
        for _ in range(2):
            sampler = _native.Sampler(np.random.default_rng(11))
            regions = _regions()
            seen = []
            for sample in range(5):
                if sample == 3:  # a structural change replaces the arrays
                    regions.split_at(4, 4096)
                sampler.pick_prepare(phys, None, regions)
                seen.append(regions.sampling_addr.copy())
                sampler.check_update(phys, regions, 10)
            picks.append(seen)
        assert len(picks[0][-1]) == len(_regions()) + 1
        for a, b in zip(*picks):
            assert np.array_equal(a, b)
        # a different seed picks other addresses
        other = _native.Sampler(np.random.default_rng(12))
        regions = _regions()
        other.pick_prepare(phys, None, regions)
        assert not np.array_equal(regions.sampling_addr, picks[0][0])
    finally:
        phys.close()


def test_sampler_of_a_gone_target_counts_nothing(tmp_path: Path) -> None:
    phys = _phys(tmp_path)
    try:
        sampler = _native.Sampler(np.random.default_rng(1))
        regions = _regions()
        sampler.skip(regions)
        assert sampler.check_update(phys, regions, 10) == 0
        assert not regions.nr_accesses.any()
    finally:
        phys.close()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**40),
            st.integers(0, 2**32 - 1),
        ),
        max_size=40,
    ),
    st.integers(0, 2**32 - 1),
)
def test_update_rate_in_c_equals_the_core(rows: list, window: int) -> None:
    """``damon_update_region_access_rate()``: the C loop and Regions.update_access_rate."""
    regions = Regions([(i * 4096, (i + 1) * 4096) for i in range(len(rows))])
    for name, col in zip(("nr_accesses", "nr_accesses_bp", "last_nr_accesses"), (1, 2, 3)):
        getattr(regions, name)[:] = [r[col] for r in rows]
    reference = regions.copy()
    accessed = np.array([r[0] for r in rows], np.bool_)
    max_nr = _native.update_rate(regions, accessed, window)
    reference.update_access_rate(accessed, window)
    assert max_nr == (int(reference.nr_accesses.max()) if rows else 0)
    assert np.array_equal(regions.nr_accesses, reference.nr_accesses)
    assert np.array_equal(regions.nr_accesses_bp, reference.nr_accesses_bp)
