"""The adaptive regions adjustment of a context's loop: ``kdamond_merge_regions()`` and
``kdamond_split_regions()`` over all of its targets."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydamon.core.context import Context


def merge_regions(ctx: Context, threshold: int, sz_limit: int) -> None:
    """``kdamond_merge_regions()``: merge, doubling the threshold while too many regions."""
    attrs = ctx.attrs
    max_thres = attrs.aggr_interval_us // (attrs.sample_interval_us or 1)
    while True:
        nr_regions = 0
        for t in ctx.targets:
            t.regions.merge_regions(threshold, sz_limit)
            nr_regions += len(t.regions)
        threshold = max(1, threshold * 2)
        if not (nr_regions > attrs.max_nr_regions and threshold // 2 < max_thres):
            break


def split_regions(ctx: Context, last_nr_regions: int) -> int:
    """``kdamond_split_regions()``: split into 2 (or 3 if stuck) while under max/2; returns the
    number of regions to remember as ``last_nr_regions`` for the next call.

    Kernel version: this follows mainline as the reference describes it (v6.16..v7.1): no split
    above max_nr_regions / 2, ``sz_limit = total / min_nr_regions`` (newer mm-tree work,
    ``damon_apply_min_nr_regions()`` and partial splits above max/2, is not followed). The
    kernel keeps ``last_nr_regions`` in a function-static variable shared by all contexts; here
    it is per context.
    """
    nr_regions = ctx.nr_regions
    max_nr = ctx.attrs.max_nr_regions
    if nr_regions > max_nr // 2:
        return last_nr_regions
    nr_subs = 2
    # Maybe the middle of the region has a different access frequency.
    if last_nr_regions == nr_regions and nr_regions < max_nr // 3:
        nr_subs = 3
    for t in ctx.targets:
        t.regions.split_regions(nr_subs, ctx.rng, ctx.min_region_sz)
    return nr_regions
