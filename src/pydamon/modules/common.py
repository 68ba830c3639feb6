"""Parameters and pieces the DAMOS-based modules share (the kernel's ``modules-common.c``).

Monitoring attributes, quota and watermarks parameters with the kernel modules' names, units
and defaults, and a module base that copies its schemes' stats after every aggregation (as the
kernel modules do in their callbacks) so that :meth:`stats` is safe from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from pydamon.core import Attrs, Context, Operations, Target
from pydamon.damos.fields import MAX_WMARK_PERMIL
from pydamon.damos.scheme import Quota, Watermarks, WmarkMetric
from pydamon.modules.base import Module, Param, ParamError, Params
from pydamon.modules.targets import check_target_params, make_ops_targets


def monitoring_params(sample_us: int = 5000, aggr_us: int = 100_000) -> tuple[Param, ...]:
    return (
        Param("sample_interval", int, sample_us, "sampling interval", unit="us", min=1),
        Param("aggr_interval", int, aggr_us, "aggregation interval", unit="us", min=1),
        Param("min_nr_regions", int, 10, "minimum number of monitoring regions", min=3),
        Param("max_nr_regions", int, 1000, "maximum number of monitoring regions", min=3),
    )


def quota_params(ms: int, sz: int | None, reset_ms: int = 1000) -> tuple[Param, ...]:
    params = [
        Param("quota_ms", int, ms, "time quota per reset interval (0: none)", unit="ms", min=0),
    ]
    if sz is not None:
        params.append(
            Param(
                "quota_sz", int, sz, "size quota per reset interval (0: none)", unit="bytes", min=0
            )
        )
    params.append(
        Param(
            "quota_reset_interval_ms",
            int,
            reset_ms,
            "quota charge window",
            unit="ms",
            min=0,
        )
    )
    return tuple(params)


def wmarks_params(high: int, mid: int, low: int) -> tuple[Param, ...]:
    return (
        Param("wmarks_interval", int, 5_000_000, "watermarks check interval", unit="us", min=1),
        *(
            Param(f"wmarks_{key}", int, value, what, unit="permil", min=0, max=MAX_WMARK_PERMIL)
            for key, value, what in (
                ("high", high, "free memory rate above which to stop"),
                ("mid", mid, "free memory rate below which to start"),
                ("low", low, "free memory rate below which to stop"),
            )
        ),
    )


def check_common(p: Params) -> None:
    check_target_params(p)
    Attrs(
        sample_interval_us=p.sample_interval,
        aggr_interval_us=p.aggr_interval,
        min_nr_regions=p.min_nr_regions,
        max_nr_regions=p.max_nr_regions,
    ).validate()
    if hasattr(p, "wmarks_high") and not p.wmarks_high >= p.wmarks_mid >= p.wmarks_low:
        raise ParamError(
            f"watermarks must satisfy wmarks_high >= wmarks_mid >= wmarks_low "
            f"(got {p.wmarks_high}, {p.wmarks_mid}, {p.wmarks_low})"
        )


def make_watermarks(p: Params) -> Watermarks:
    return Watermarks(
        metric=WmarkMetric.FREE_MEM_RATE,
        interval_us=p.wmarks_interval,
        high=p.wmarks_high,
        mid=p.wmarks_mid,
        low=p.wmarks_low,
    )


def make_quota(
    p: Params,
    *,
    ms: int | None = None,
    weight_nr_accesses_permil: int = 0,
    weight_age_permil: int = 0,
) -> Quota:
    return Quota(
        ms=p.quota_ms if ms is None else ms,
        sz=getattr(p, "quota_sz", 0),
        reset_interval_ms=p.quota_reset_interval_ms,
        weight_nr_accesses_permil=weight_nr_accesses_permil,
        weight_age_permil=weight_age_permil,
    )


class SchemesModule(Module):
    """A module of DAMOS schemes over the common target and monitoring parameters.

    Subclasses define :meth:`make_schemes` and :meth:`scheme_stats` (mapping the schemes' stats
    to the module's stat names).
    """

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self._stats: dict[str, Any] = {}
        self._stats_lock = threading.Lock()
        self.wmarks_active: bool | None = None

    @classmethod
    def check_params(cls, p: Params) -> None:
        check_common(p)

    def make_targets(self) -> tuple[Operations[Any], list[Target]]:
        return make_ops_targets(self.p)

    def make_attrs(self) -> Attrs:
        p = self.p
        return Attrs(
            sample_interval_us=p.sample_interval,
            aggr_interval_us=p.aggr_interval,
            min_nr_regions=p.min_nr_regions,
            max_nr_regions=p.max_nr_regions,
        )

    def scheme_stats(self, ctx: Context) -> dict[str, Any]:
        raise NotImplementedError

    def extra_stats(self, ctx: Context) -> dict[str, Any]:
        return {}

    def _copy_stats(self, ctx: Context, active: bool) -> None:
        stats = self.scheme_stats(ctx)
        stats["active"] = active
        stats.update(self.extra_stats(ctx))
        with self._stats_lock:
            self._stats = stats

    def after_aggregation(self, ctx: Context) -> None:
        self._copy_stats(ctx, True)
        return None

    def after_wmarks_check(self, ctx: Context) -> None:
        # Called only while every scheme is deactivated (monitoring paused).
        self._copy_stats(ctx, False)
        return None

    def stats(self) -> dict[str, Any]:
        with self._stats_lock:
            return dict(self._stats)

    @classmethod
    def format_stats(cls, stats: Mapping[str, Any]) -> str:
        if not stats:
            return "no aggregation finished yet"
        return "\n".join(
            f"{k}: {_human(k, v)}" for k, v in stats.items() if not isinstance(v, list | dict)
        )


def _human(key: str, value: Any) -> str:
    if key.startswith("bytes_") or key.endswith("_bytes"):
        return f"{value} ({value / 2**20:.1f} MiB)"
    return str(value)
