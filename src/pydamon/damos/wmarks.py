"""Watermarks: the activation state machine of ``damos_wmark_wait_us()``."""

from __future__ import annotations

from pydamon.damos.scheme import Scheme, WmarkMetric


def wmark_wait_us(scheme: Scheme, metric_value: int | None) -> int:
    """Update ``scheme.wmarks_activated`` for ``metric_value``; 0 if the scheme is active, else
    how long to wait before checking again (µs).

    Above ``high`` or below ``low``: deactivate. Inactive and between ``mid`` and ``high``: stay
    inactive. Otherwise (at or below ``mid``, at or above ``low``): activate. No metric (``none``)
    or an unreadable one keeps the scheme active.
    """
    w = scheme.wmarks
    if w.metric == WmarkMetric.NONE or metric_value is None:
        return 0
    if metric_value > w.high or w.low > metric_value:
        scheme.wmarks_activated = False
        return w.interval_us
    if w.high >= metric_value >= w.mid and not scheme.wmarks_activated:
        return w.interval_us
    scheme.wmarks_activated = True
    return 0
