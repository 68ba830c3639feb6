"""The run-time state the engine keeps in a scheme: quota charging, statistics, tried regions."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class QuotaState:
    """The kernel's quota bookkeeping fields that users do not set."""

    #: Effective size quota of the current charge window (bytes).
    esz: int = 0
    #: The feedback loop's input (esz in bp) when goals are set.
    esz_bp: int = 0
    charged_sz: int = 0
    #: Start of the current charge window (monitor clock, µs); None before the first window.
    charged_from_us: int | None = None
    total_charged_sz: int = 0
    total_charged_ns: int = 0
    #: Where the last window stopped: (target index, address) to resume from, or None.
    charge_target_from: int | None = None
    charge_addr_from: int = 0
    #: Lowest priority score a region needs to be applied in this window.
    min_score: int = 0


@dataclass
class Stats:
    """Per-scheme statistics (``struct damos_stat``)."""

    nr_tried: int = 0
    sz_tried: int = 0
    nr_applied: int = 0
    sz_applied: int = 0
    sz_ops_filter_passed: int = 0
    qt_exceeds: int = 0


@dataclass(frozen=True)
class TriedRegion:
    """A region a scheme was tried on (``schemes/<N>/tried_regions/<R>``)."""

    target_index: int
    start: int
    end: int
    nr_accesses: int
    age: int
    sz_filter_passed: int

    @property
    def size(self) -> int:
        return self.end - self.start
