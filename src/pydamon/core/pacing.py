"""Honest sampling intervals: each page's access window is the sampling interval.

A page's access window runs from its idle-bit write in ``prepare_access_checks`` to its read in
``check_accesses``. Sleeping the full interval after the prepare (as ``kdamond_usleep()`` does)
makes the window the sleep plus the tail of the prepare after the page's write plus the head of
the check before its read: with 100 ms of work per sample far more than the interval asked, and
nr_accesses read high. The prepare and the check walk the regions in the same order, so a
sample's mean write is at the prepare's midpoint and its mean read at the check's; the pacer
sleeps until ``prepare midpoint + interval - (the last check's half duration)``, which puts the
mean window at the interval (tests/test_core_pacing.py measures it). What that prediction
misses steadily (sleeps that wake late on a loaded machine, a check slower than the last) is fed
back: the mean of the windows' recent errors is taken off the next deadlines.

On a virtual clock the work takes no time, so the deadline is exactly ``now + interval``, as
before. When the work of one sample cannot fit in the interval the pacer says so once, in one
line, with what to do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

#: A per-snapshot measure not known (an old record, a kernel snapshot).
UNKNOWN = -1

#: Mean windows this much over the interval (in per cent) are reported as not held.
WINDOW_SLACK_PERCENT = 10
#: How much of a sample's window error the next deadlines correct (1/8: an average over the
#: last ~8 samples, so one late wakeup moves the next windows little).
ERROR_GAIN = 1 / 8


@dataclass
class SampleTimes:
    """The clock times of one sample's two halves (microseconds, the context's clock)."""

    prepare_start_us: int
    prepare_end_us: int
    check_start_us: int
    check_end_us: int

    @property
    def window_us(self) -> int:
        """The sample's mean access window: mean read time minus mean write time."""
        return (self.check_start_us + self.check_end_us) // 2 - (
            self.prepare_start_us + self.prepare_end_us
        ) // 2


class SamplePacer:
    """Paces one context's samples and counts what each aggregation achieved."""

    def __init__(self) -> None:
        #: time from a check's start to its mean read, from the last sample (us)
        self.check_lead_us = 0
        #: the windows' recent mean error (us), taken off the deadlines; and whether the last
        #: deadline fell before the prepare's end (work beyond the interval: no correction then)
        self.correction_us = 0.0
        self._overrun = False
        #: samples taken in the current aggregation, and the sum of their windows
        self.nr_samples = 0
        self.window_sum_us = 0
        #: the loop's own wall time in the current aggregation (all but the sleeps)
        self.sleep_sum_us = 0
        #: the last aggregation's sample count, mean window and duration (us), once one ended
        self.last_nr_samples = UNKNOWN
        self.last_window_us = UNKNOWN
        self.last_aggregation_us = UNKNOWN
        #: the one-line warning given (once per context), or None
        self.warning: str | None = None
        #: totals over the whole run, for status and summaries
        self.total_samples = 0
        self.total_region_samples = 0
        self.total_window_us = 0
        self._cpu_start_s = time.process_time()

    def start(self) -> None:
        """The loop starts: CPU per sample counts from here."""
        self._cpu_start_s = time.process_time()

    def deadline_us(self, prepare_start_us: int, prepare_end_us: int, interval_us: int) -> int:
        """When to start the check so that the mean access window is ``interval_us``."""
        mean_write_us = (prepare_start_us + prepare_end_us) // 2
        deadline = mean_write_us + interval_us - self.check_lead_us
        # work beyond the interval, whatever the correction (which must not wind itself up)
        self._overrun = deadline < prepare_end_us
        return max(deadline - int(self.correction_us), prepare_end_us)

    def sampled(self, times: SampleTimes, nr_regions: int, interval_us: int) -> None:
        self.total_region_samples += nr_regions
        self.check_lead_us = (times.check_end_us - times.check_start_us) // 2
        self.nr_samples += 1
        self.total_samples += 1
        window = times.window_us
        if not self._overrun:  # an overrun window is the work's, not the pacing's, error
            error = window - interval_us
            self.correction_us += ERROR_GAIN * error
            self.correction_us = max(-interval_us, min(interval_us, self.correction_us))
        self.window_sum_us += window
        self.total_window_us += window
        self.sleep_sum_us += times.check_start_us - times.prepare_end_us

    @property
    def mean_window_us(self) -> int:
        """The current aggregation's mean access window (UNKNOWN before its first sample)."""
        return self.window_sum_us // self.nr_samples if self.nr_samples else UNKNOWN

    @property
    def run_mean_window_us(self) -> int:
        return self.total_window_us // self.total_samples if self.total_samples else UNKNOWN

    def stats(self, sample_interval_us: int) -> dict[str, Any]:
        """What the run achieved so far: samples, mean access window, the process's CPU per
        sample and per region-sample (for ``pydamon status`` and summaries)."""
        cpu_us = (time.process_time() - self._cpu_start_s) * 1e6
        samples, region_samples = self.total_samples, self.total_region_samples
        return {
            "nr_samples": samples,
            "sample_interval_us": sample_interval_us,
            "last_aggregation_us": self.last_aggregation_us,
            "last_nr_samples": self.last_nr_samples,
            "last_mean_access_window_us": self.last_window_us,
            "cpu_per_sample_us": round(cpu_us / samples, 1) if samples else None,
            "cpu_per_region_sample_us": round(cpu_us / region_samples, 2)
            if region_samples
            else None,
        }

    def aggregation_ended(
        self, start_us: int, end_us: int, interval_us: int, warn: bool = True
    ) -> str | None:
        """Note the aggregation just ended; the one-line warning the first time (if ``warn``)
        work does not fit in the sampling interval (None otherwise, and ever after)."""
        self.last_nr_samples = self.nr_samples
        self.last_window_us = self.mean_window_us
        self.last_aggregation_us = end_us - start_us
        if not warn or self.warning is not None or not self.nr_samples or interval_us <= 0:
            return None
        work_us = (end_us - start_us - self.sleep_sum_us) // self.nr_samples
        window_us = self.mean_window_us
        if work_us <= interval_us and window_us * 100 <= interval_us * (100 + WINDOW_SLACK_PERCENT):
            return None
        self.warning = (
            f"one sample's work takes {work_us / 1000:.1f} ms, more than the "
            f"{interval_us / 1000:.1f} ms sampling interval allows: access windows are "
            f"{window_us / 1000:.1f} ms and this aggregation took {(end_us - start_us) / 1e6:.2f}"
            f" s for {self.nr_samples} samples; raise the sampling interval, lower "
            "max_nr_regions or set a CPU budget"
        )
        return self.warning

    def reset(self) -> None:
        """A new aggregation starts."""
        self.nr_samples = 0
        self.window_sum_us = 0
        self.sleep_sum_us = 0
