"""Percentiles and distributions of per-snapshot values (wss, footprints, nr_regions), damo's way.

A percentile is always an observed value (damo's 'lower' rule: the value at index
``len * p / 100`` of the sorted values), never an interpolation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: Percentiles the wss/footprints/nr_regions tables show by default (damo's).
DEFAULT_PERCENTILES = (0, 25, 50, 75, 100)

Values = Sequence[int] | Sequence[float] | npt.NDArray[np.integer] | npt.NDArray[np.floating]


def percentile_range(start: int, stop: int, step: int) -> list[int]:
    """The percentiles ``range(start, stop, step)`` of a ``--range START STOP STEP`` option."""
    if step <= 0 or start < 0 or stop > 101 or start >= stop:
        raise ValueError("--range needs START < STOP <= 101 and STEP > 0")
    return list(range(start, stop, step))


def _index(n: int, p: int) -> int:
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is not within 0..100")
    return min(int(n * p / 100), n - 1)


def percentiles_of(
    values: Values, percentiles: Sequence[int] = DEFAULT_PERCENTILES
) -> list[tuple[int, int]]:
    """(p, value) rows of the sorted values, by damo's rule (see the module docstring)."""
    ordered = np.sort(np.asarray(values))
    if not len(ordered):
        return []
    return [(int(p), int(ordered[_index(len(ordered), p)])) for p in percentiles]


@dataclass
class Distribution:
    """The rows a distribution table shows: its average and one (p, value) row a percentile."""

    average: float
    rows: list[tuple[int, int]]


def distribution(
    values: Values, percentiles: Sequence[int] = DEFAULT_PERCENTILES, sortby: str = "size"
) -> Distribution | None:
    """``sortby="size"``: the percentiles of the values; ``"time"``: the values at those
    fractions of the run, in time order (damo's ``--sortby time``). None without values."""
    arr = np.asarray(values)
    if not len(arr):
        return None
    if sortby == "time":
        rows = [(int(p), int(arr[_index(len(arr), p)])) for p in percentiles]
    elif sortby == "size":
        rows = percentiles_of(arr, percentiles)
    else:
        raise ValueError(f"unknown sort order {sortby!r}; use size or time")
    return Distribution(float(arr.mean()), rows)
