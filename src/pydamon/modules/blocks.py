"""Per-block access history: which fixed-size, aligned blocks stayed hot over aggregations.

DAMON's regions are adaptive: their boundaries move every aggregation (random splits, merges of
similar neighbours), so a region's hotness says little about a fixed 2 MiB block it happens to
cover. A region straddling warm and cold memory reads hot now and then, and a policy acting on
whole hot regions then acts on the cold part too; the region's ``age`` does not help, since the
noise of hot regions keeps resetting it. :class:`BlockHistory` keeps, per target and per
``block_size``-aligned block, a bit per aggregation (the last ``window`` of them): was the block
mostly covered by hot regions? A block is *persistently hot* if that bit was set in at least
``min_hot`` of the last ``window`` aggregations; modules act on such blocks only (see
:mod:`pydamon.modules.thp`).

Cost per aggregation: proportional to the regions plus the blocks hot in the window (numpy),
never to the monitored size.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

I64Array = npt.NDArray[np.int64]
U64Array = npt.NDArray[np.uint64]

#: Most aggregations a history can span (one bit each in a 64-bit word).
MAX_WINDOW = 64


class BlockHistory:
    """Hot/not-hot bits of the last ``window`` aggregations for every block of each target.

    ``min_coverage_permil``: the share of a block that hot regions must cover for the block to
    count as hot in an aggregation (more than this, per mille).
    """

    def __init__(
        self, block_size: int, window: int, min_hot: int, min_coverage_permil: int = 500
    ) -> None:
        self.block_size = block_size
        self.configure(window, min_hot, min_coverage_permil)
        #: target index -> (sorted block numbers, their history bits; bit 0 = last aggregation)
        self._blocks: dict[int, tuple[I64Array, U64Array]] = {}

    def configure(self, window: int, min_hot: int, min_coverage_permil: int) -> None:
        """Change the rule online; the bits recorded so far are kept (trimmed to ``window``)."""
        if not 1 <= min_hot <= window <= MAX_WINDOW:
            raise ValueError(
                f"need 1 <= min_hot ({min_hot}) <= window ({window}) <= {MAX_WINDOW} aggregations"
            )
        self.window = window
        self.min_hot = min_hot
        self.min_coverage_permil = min_coverage_permil
        self._mask = np.uint64((1 << window) - 1)

    def update(
        self, target_index: int, starts: I64Array, ends: I64Array, hot: npt.NDArray[np.bool_]
    ) -> None:
        """Record one aggregation of a target: its regions ``[starts, ends)`` and which are hot."""
        hot_blocks = self._hot_blocks(
            np.asarray(starts, dtype=np.int64)[hot], np.asarray(ends, dtype=np.int64)[hot]
        )
        old_blocks, old_bits = self._blocks.get(
            target_index, (np.empty(0, np.int64), np.empty(0, np.uint64))
        )
        blocks = np.union1d(old_blocks, hot_blocks)
        bits = np.zeros(len(blocks), dtype=np.uint64)
        bits[np.searchsorted(blocks, old_blocks)] = (old_bits << np.uint64(1)) & self._mask
        bits[np.searchsorted(blocks, hot_blocks)] |= np.uint64(1)
        keep = bits != 0  # blocks not hot at all in the window are forgotten
        self._blocks[target_index] = (blocks[keep], bits[keep])

    def _hot_blocks(self, starts: I64Array, ends: I64Array) -> I64Array:
        """Sorted numbers of the blocks more than ``min_coverage_permil`` covered by the ranges."""
        if not len(starts):
            return np.empty(0, np.int64)
        bs = self.block_size
        first, last = starts // bs, (ends - 1) // bs
        counts = last - first + 1
        # one entry per (range, block it touches): the bytes of the block the range covers
        nr = int(counts.sum())
        owner = np.repeat(np.arange(len(starts)), counts)
        offsets = np.arange(nr) - np.repeat(np.cumsum(counts) - counts, counts)
        block = first[owner] + offsets
        covered = np.minimum(ends[owner], (block + 1) * bs) - np.maximum(starts[owner], block * bs)
        blocks, inverse = np.unique(block, return_inverse=True)
        total = np.bincount(inverse, weights=covered, minlength=len(blocks))
        result: I64Array = blocks[total * 1000 > self.min_coverage_permil * bs]
        return result

    def persistent_blocks(self, target_index: int) -> I64Array:
        """Sorted numbers of the target's blocks hot in at least ``min_hot`` of the window."""
        blocks, bits = self._blocks.get(target_index, (np.empty(0, np.int64), None))
        if bits is None or not len(blocks):
            return blocks
        bits = bits & self._mask
        nr_hot = np.zeros(len(bits), dtype=np.int64)
        for i in range(self.window):
            nr_hot += ((bits >> np.uint64(i)) & np.uint64(1)).astype(np.int64)
        result: I64Array = blocks[nr_hot >= self.min_hot]
        return result

    def persistent_ranges(self, target_index: int, min_size: int = 0) -> list[tuple[int, int]]:
        """The persistently hot blocks as merged address ranges of at least ``min_size`` bytes."""
        blocks = self.persistent_blocks(target_index)
        if not len(blocks):
            return []
        breaks = np.flatnonzero(np.diff(blocks) != 1)
        firsts = np.concatenate(([blocks[0]], blocks[breaks + 1]))
        lasts = np.concatenate((blocks[breaks], [blocks[-1]]))
        bs = self.block_size
        return [
            (int(f) * bs, (int(la) + 1) * bs)
            for f, la in zip(firsts, lasts)
            if (la - f + 1) * bs >= min_size
        ]

    def nr_tracked_blocks(self) -> int:
        """Blocks hot at least once in the window, over all targets."""
        return sum(len(b) for b, _ in self._blocks.values())

    def clear(self) -> None:
        self._blocks.clear()
