"""DAMOS schemes in sysfs (the kernel's ``mm/damon/sysfs-schemes.c``): write a context's schemes
from :class:`~pydamon.damos.Scheme` objects and read back stats, tried regions and effective
quotas.

Patterns are written in the kernel's units (samples per aggregation, aggregation intervals),
resolved against the context's attrs. Filters go to ``core_filters/`` and ``ops_filters/`` where
the kernel has them (6.15+), else all to ``filters/``. The caller checks the configuration against
the kernel's capabilities first (:func:`pydamon.kernel.capabilities.require`); a file this kernel
does not have is then only skipped where it holds the kernel's default.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydamon.core.attrs import Attrs
from pydamon.damos.scheme import (
    Filter,
    FilterType,
    GoalMetric,
    Quota,
    QuotaGoal,
    Scheme,
    Stats,
    TriedRegion,
    Watermarks,
)
from pydamon.kernel.sysfs_common import Sysfs, join

_NODE_METRICS = frozenset(
    {
        GoalMetric.NODE_MEM_USED_BP,
        GoalMetric.NODE_MEM_FREE_BP,
        GoalMetric.NODE_MEMCG_USED_BP,
        GoalMetric.NODE_MEMCG_FREE_BP,
    }
)
_MEMCG_METRICS = frozenset({GoalMetric.NODE_MEMCG_USED_BP, GoalMetric.NODE_MEMCG_FREE_BP})
#: ``NUMA_NO_NODE``: the kernel's target_nid of a scheme without one.
NUMA_NO_NODE = -1


def write_schemes(fs: Sysfs, ctx_dir: str, schemes: Sequence[Scheme], attrs: Attrs) -> None:
    """Write ``schemes`` to ``ctx_dir/schemes/``."""
    schemes_dir = join(ctx_dir, "schemes")
    fs.write_nr(schemes_dir, "schemes", len(schemes))
    for i, scheme in enumerate(schemes):
        write_scheme(fs, join(schemes_dir, i), scheme, attrs)


def write_scheme(fs: Sysfs, d: str, scheme: Scheme, attrs: Attrs) -> None:
    min_sz, max_sz, min_nr, max_nr, min_age, max_age = scheme.pattern.resolve(attrs)
    for rel, value in (
        ("access_pattern/sz/min", min_sz),
        ("access_pattern/sz/max", max_sz),
        ("access_pattern/nr_accesses/min", min_nr),
        ("access_pattern/nr_accesses/max", max_nr),
        ("access_pattern/age/min", min_age),
        ("access_pattern/age/max", max_age),
    ):
        fs.write_ulong(join(d, rel), value)
    fs.write(join(d, "action"), str(scheme.action))
    if fs.exists(join(d, "apply_interval_us")):
        fs.write(join(d, "apply_interval_us"), scheme.apply_interval_us)
    if fs.exists(join(d, "target_nid")):
        nid = NUMA_NO_NODE if scheme.target_nid is None else scheme.target_nid
        fs.write(join(d, "target_nid"), nid)
    _write_quotas(fs, join(d, "quotas"), scheme.quota)
    _write_watermarks(fs, join(d, "watermarks"), scheme.wmarks)
    _write_filters(fs, d, scheme.filters)


def _write_quotas(fs: Sysfs, d: str, quota: Quota) -> None:
    fs.write(join(d, "ms"), quota.ms)
    fs.write_ulong(join(d, "bytes"), quota.sz)
    fs.write(join(d, "reset_interval_ms"), quota.reset_interval_ms)
    fs.write(join(d, "weights/sz_permil"), quota.weight_sz_permil)
    fs.write(join(d, "weights/nr_accesses_permil"), quota.weight_nr_accesses_permil)
    fs.write(join(d, "weights/age_permil"), quota.weight_age_permil)
    goals_dir = join(d, "goals")
    if fs.isdir(goals_dir):
        fs.write_nr(goals_dir, "goals", len(quota.goals))
        for i, goal in enumerate(quota.goals):
            _write_goal(fs, join(goals_dir, i), goal)
    if fs.exists(join(d, "goal_tuner")):
        fs.write(join(d, "goal_tuner"), str(quota.goal_tuner))


def _write_goal(fs: Sysfs, d: str, goal: QuotaGoal) -> None:
    # The metric first: the kernel reads nid/path by the metric at commit time only, but this
    # is the order its documentation gives.
    if fs.exists(join(d, "target_metric")):
        fs.write(join(d, "target_metric"), str(goal.metric))
    if goal.metric in _NODE_METRICS and goal.nid is not None:
        fs.write(join(d, "nid"), goal.nid)
    if goal.metric in _MEMCG_METRICS and goal.path is not None:
        fs.write(join(d, "path"), goal.path)
    fs.write(join(d, "target_value"), goal.target_value)
    fs.write(join(d, "current_value"), goal.current_value)


def _write_watermarks(fs: Sysfs, d: str, w: Watermarks) -> None:
    fs.write(join(d, "metric"), str(w.metric))
    fs.write(join(d, "interval_us"), w.interval_us)
    fs.write(join(d, "high"), w.high)
    fs.write(join(d, "mid"), w.mid)
    fs.write(join(d, "low"), w.low)


def _write_filters(fs: Sysfs, scheme_dir: str, filters: Sequence[Filter]) -> None:
    if fs.isdir(join(scheme_dir, "core_filters")):
        _write_filters_dir(
            fs, join(scheme_dir, "core_filters"), [f for f in filters if f.handled_by_core]
        )
        _write_filters_dir(
            fs, join(scheme_dir, "ops_filters"), [f for f in filters if not f.handled_by_core]
        )
        # The legacy directory is applied after both: keep it empty.
        _write_filters_dir(fs, join(scheme_dir, "filters"), [])
    elif fs.isdir(join(scheme_dir, "filters")):
        _write_filters_dir(fs, join(scheme_dir, "filters"), filters)


def _write_filters_dir(fs: Sysfs, d: str, filters: Sequence[Filter]) -> None:
    if not fs.isdir(d):
        return
    fs.write_nr(d, "filters", len(filters))
    for i, f in enumerate(filters):
        fd = join(d, i)
        fs.write(join(fd, "type"), str(f.type))
        fs.write(join(fd, "matching"), f.matching)
        if fs.exists(join(fd, "allow")):
            fs.write(join(fd, "allow"), f.allow)
        if f.type == FilterType.MEMCG:
            fs.write(join(fd, "memcg_path"), f.memcg_path or "")
        elif f.type == FilterType.ADDR:
            fs.write_ulong(join(fd, "addr_start"), f.addr_start)
            fs.write_ulong(join(fd, "addr_end"), f.addr_end)
        elif f.type == FilterType.TARGET:
            fs.write(join(fd, "damon_target_idx"), f.target_idx)
        elif f.type == FilterType.HUGEPAGE_SIZE:
            fs.write_ulong(join(fd, "min"), f.min_sz)
            fs.write_ulong(join(fd, "max"), f.max_sz)


# -- reading back -------------------------------------------------------------------------------


def scheme_dirs(fs: Sysfs, ctx_dir: str) -> list[str]:
    schemes_dir = join(ctx_dir, "schemes")
    return [join(schemes_dir, i) for i in range(fs.read_int(join(schemes_dir, "nr_schemes")))]


def read_stats(fs: Sysfs, scheme_dir: str) -> Stats:
    """A scheme's ``stats/`` as the kernel last updated them (``update_schemes_stats``)."""
    d = join(scheme_dir, "stats")

    def value(name: str) -> int:
        return fs.read_int(join(d, name)) if fs.exists(join(d, name)) else 0

    return Stats(
        nr_tried=value("nr_tried"),
        sz_tried=value("sz_tried"),
        nr_applied=value("nr_applied"),
        sz_applied=value("sz_applied"),
        sz_ops_filter_passed=value("sz_ops_filter_passed"),
        qt_exceeds=value("qt_exceeds"),
    )


def read_tried_regions(fs: Sysfs, scheme_dir: str, nr_targets: int) -> list[TriedRegion]:
    """A scheme's ``tried_regions/<R>/`` in order.

    The kernel does not say which target a tried region is of; with one target it is 0, with
    more ``target_index`` is -1 (unknown).
    """
    d = join(scheme_dir, "tried_regions")
    if not fs.isdir(d):
        return []
    # read once an aggregation by the kernel backend's snapshots: no stat per region (the
    # numbered entries are the region directories) and one look for the optional field
    numbers = sorted(int(n) for n in fs.listdir(d) if n.isdigit())
    target_index = 0 if nr_targets == 1 else -1
    has_passed = bool(numbers) and fs.exists(join(d, numbers[0], "sz_filter_passed"))
    regions = []
    for n in numbers:
        r = join(d, n)
        passed = join(r, "sz_filter_passed")
        regions.append(
            TriedRegion(
                target_index=target_index,
                start=fs.read_int(join(r, "start")),
                end=fs.read_int(join(r, "end")),
                nr_accesses=fs.read_int(join(r, "nr_accesses")),
                age=fs.read_int(join(r, "age")),
                sz_filter_passed=fs.read_int(passed) if has_passed else 0,
            )
        )
    return regions


def read_tried_bytes(fs: Sysfs, scheme_dir: str) -> int | None:
    """``tried_regions/total_bytes`` (6.6+), None where the kernel lacks it."""
    f = join(scheme_dir, "tried_regions/total_bytes")
    return fs.read_int(f) if fs.exists(f) else None


def read_effective_bytes(fs: Sysfs, scheme_dir: str) -> int:
    return fs.read_int(join(scheme_dir, "quotas/effective_bytes"))
