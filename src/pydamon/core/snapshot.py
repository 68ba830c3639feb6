"""Snapshots: the result of one aggregation of one target, as plain data.

This is the one form records, reports, modules and tests consume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pydamon.core.pacing import UNKNOWN
from pydamon.core.regions import IntArray


@dataclass
class Snapshot:
    """Regions of one target at the end of one aggregation interval.

    Times are in microseconds on the monitor's clock (virtual time for simulations).
    ``nr_accesses`` counts samples that found the region accessed in this aggregation (at most
    ``aggr_interval_us // sample_interval_us``); ``age`` counts aggregation intervals.

    ``nr_samples`` is the number of samples the aggregation really took and ``mean_window_us``
    their measured mean access window (a page's idle-bit write to its read), both
    :data:`UNKNOWN` where not measured (older records, the kernel's snapshots).
    """

    target_index: int
    target_id: int | None
    start_us: int
    end_us: int
    sample_interval_us: int
    aggr_interval_us: int
    starts: IntArray
    ends: IntArray
    nr_accesses: IntArray
    age: IntArray
    nr_samples: int = UNKNOWN
    mean_window_us: int = UNKNOWN

    @property
    def nr_regions(self) -> int:
        return int(self.starts.shape[0])

    @property
    def sizes(self) -> IntArray:
        return self.ends - self.starts

    @property
    def total_bytes(self) -> int:
        return int(self.sizes.sum())

    @property
    def max_nr_accesses(self) -> int:
        if not self.sample_interval_us:
            return max(self.aggr_interval_us, 1)
        return max(self.aggr_interval_us // self.sample_interval_us, 1)

    @property
    def access_rate(self) -> np.ndarray:
        """Per-region access rate in [0, 1]: nr_accesses / max_nr_accesses."""
        return self.nr_accesses / self.max_nr_accesses

    @property
    def age_us(self) -> IntArray:
        return self.age * self.aggr_interval_us

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_index": self.target_index,
            "target_id": self.target_id,
            "start_us": self.start_us,
            "end_us": self.end_us,
            "sample_interval_us": self.sample_interval_us,
            "aggr_interval_us": self.aggr_interval_us,
            "nr_samples": self.nr_samples,
            "mean_window_us": self.mean_window_us,
            "regions": [
                {"start": s, "end": e, "nr_accesses": n, "age": a}
                for s, e, n, a in zip(
                    self.starts.tolist(),
                    self.ends.tolist(),
                    self.nr_accesses.tolist(),
                    self.age.tolist(),
                )
            ],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Snapshot:
        regions = data["regions"]

        def col(key: str) -> IntArray:
            return np.fromiter((r[key] for r in regions), dtype=np.int64, count=len(regions))

        return cls(
            target_index=int(data["target_index"]),
            target_id=data.get("target_id"),
            start_us=int(data["start_us"]),
            end_us=int(data["end_us"]),
            sample_interval_us=int(data["sample_interval_us"]),
            aggr_interval_us=int(data["aggr_interval_us"]),
            starts=col("start"),
            ends=col("end"),
            nr_accesses=col("nr_accesses"),
            age=col("age"),
            nr_samples=int(data.get("nr_samples", UNKNOWN)),
            mean_window_us=int(data.get("mean_window_us", UNKNOWN)),
        )
