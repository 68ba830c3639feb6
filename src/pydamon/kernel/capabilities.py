"""What this kernel's DAMON can do, probed from the files it exposes, not from its version.

The kernel creates a directory's files when the directory is created, so a feature shows as a
file (``apply_interval_us``), a directory (``quotas/goals/``) or a list (``avail_operations``).
Names without a list (actions, filter types, goal metrics, tuners) are tried on a kdamond the
probe stages for itself when there is none, as the kernel rejects unknown names with ``EINVAL``;
when kdamonds exist the probe only reads (it never changes a kdamond it did not create) and infers
those names from the newest feature file present.

:func:`missing_features` / :func:`require` name what a configuration needs that is missing,
with the first mainline release that has it (``damo``'s ``_damon_features.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pydamon.core.errors import FeatureMissing
from pydamon.damos.scheme import ACTIONS, Action, FilterType, GoalMetric, GoalTuner, Scheme
from pydamon.kernel.config import KERNEL_OPERATIONS, ContextConfig
from pydamon.kernel.sysfs_common import (
    DEFAULT_ROOT,
    KernelFeatureMissing,
    KernelSysfsError,
    Sysfs,
    SysfsIO,
    join,
)

NOT_MAINLINE = "only in mm.git, no mainline release yet"

#: First mainline release of each name the kernel accepts.
OPERATIONS_SINCE = {"vaddr": "5.15", "paddr": "5.16", "fvaddr": "5.19"}
ACTIONS_SINCE = {
    **{a: "5.16" for a in ("willneed", "cold", "pageout", "hugepage", "nohugepage", "stat")},
    "lru_prio": "6.0",
    "lru_deprio": "6.0",
    "migrate_hot": "6.11",
    "migrate_cold": "6.11",
    "collapse": NOT_MAINLINE,
}
FILTER_TYPES_SINCE = {
    "anon": "6.3",
    "memcg": "6.3",
    "addr": "6.6",
    "target": "6.6",
    "young": "6.10",
    "hugepage_size": "6.15",
    "unmapped": "6.15",
    "active": "6.15",
}
GOAL_METRICS_SINCE = {
    "user_input": "6.8",
    "some_mem_psi_us": "6.9",
    "node_mem_used_bp": "6.16",
    "node_mem_free_bp": "6.16",
    "node_memcg_used_bp": "6.19",
    "node_memcg_free_bp": "6.19",
    "active_mem_bp": "7.0",
    "inactive_mem_bp": "7.0",
}
GOAL_TUNERS_SINCE = {"consist": "7.1", "temporal": "7.1"}

#: Files and directories whose presence shows a feature: (path in its kind of directory, since).
#: The newest one present is a floor of the kernel's DAMON version for names without a list.
FEATURE_FILES_SINCE: dict[str, tuple[str, str]] = {
    "avail_operations": ("context:avail_operations", "5.19"),
    "tried_regions": ("scheme:tried_regions", "6.2"),
    "filters": ("scheme:filters", "6.3"),
    "tried_regions_total_bytes": ("scheme:tried_regions/total_bytes", "6.6"),
    "apply_interval": ("scheme:apply_interval_us", "6.7"),
    "quota_goals": ("scheme:quotas/goals", "6.8"),
    "effective_quotas": ("scheme:quotas/effective_bytes", "6.9"),
    "target_nid": ("scheme:target_nid", "6.11"),
    "sz_ops_filter_passed": ("scheme:stats/sz_ops_filter_passed", "6.14"),
    "core_ops_filter_dirs": ("scheme:core_filters", "6.15"),
    "intervals_goal": ("context:monitoring_attrs/intervals/intervals_goal", "6.15"),
    "dests": ("scheme:dests", "6.17"),
    "refresh_ms": ("kdamond:refresh_ms", "6.17"),
    "addr_unit": ("context:addr_unit", "6.18"),
    "obsolete_target": ("target:obsolete_target", "6.19"),
    "nr_snapshots": ("scheme:stats/nr_snapshots", "7.0"),
    "goal_tuner": ("scheme:quotas/goal_tuner", "7.1"),
}

STATS_FIELDS = (
    "nr_tried",
    "sz_tried",
    "nr_applied",
    "sz_applied",
    "sz_ops_filter_passed",
    "qt_exceeds",
    "nr_snapshots",
    "max_nr_snapshots",
)
TRIED_REGION_FIELDS = ("start", "end", "nr_accesses", "age", "sz_filter_passed")


def version_key(since: str) -> tuple[int, ...]:
    """``"6.15"`` -> (6, 15); anything not yet in a release sorts after every release."""
    try:
        return tuple(int(p) for p in since.split("."))
    except ValueError:
        return (999,)


@dataclass(frozen=True)
class KernelCapabilities:
    """What the DAMON sysfs tree at ``root`` offers.

    ``inspected`` is False when there was no kdamond to look into (and staging one was not
    allowed): then nothing beyond ``sysfs`` is known. ``probed_by`` says how it was found.
    """

    root: str
    sysfs: bool
    inspected: bool = False
    probed_by: str = ""
    operations: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    filter_dirs: tuple[str, ...] = ()
    filter_types: tuple[str, ...] = ()
    allow_filters: bool = False
    goal_metrics: tuple[str, ...] = ()
    goal_tuners: tuple[str, ...] = ()
    stats_fields: tuple[str, ...] = ()
    tried_region_fields: tuple[str, ...] = ()
    #: Feature name (FEATURE_FILES_SINCE's keys) -> whether its file or directory is there.
    files: dict[str, bool] = field(default_factory=dict)

    def has(self, feature: str) -> bool:
        return self.files.get(feature, False)

    @property
    def version_floor(self) -> str:
        """The first release that has every feature file present ("" if none is)."""
        present = [FEATURE_FILES_SINCE[k][1] for k, v in self.files.items() if v]
        return max(present, key=version_key) if present else ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["version_floor"] = self.version_floor
        return d


# -- probing ----------------------------------------------------------------------------------


@dataclass
class _Dirs:
    """One directory of each kind found in the tree ("" where none exists)."""

    kdamond: str = ""
    context: str = ""
    target: str = ""
    scheme: str = ""
    filters: dict[str, str] = field(default_factory=dict)  # filter dir name -> a filter dir
    goal: str = ""


def probe(
    root: str = DEFAULT_ROOT,
    io: SysfsIO | None = None,
    stage: bool = False,
    owned: Iterable[int] = (),
) -> KernelCapabilities:
    """Probe the DAMON sysfs tree at ``root``; by default only reading (``pydamon features``).

    With ``stage`` true and no kdamond, or an ``owned`` kdamond that is off and has no context,
    stage a probe configuration (a context, a target, a scheme, a filter in each filters
    directory, a quota goal), look and try names in it, and remove it again. Otherwise only read
    the first directories of each kind found in the existing kdamonds.
    """
    fs = Sysfs(root, io)
    if not fs.isdir("kdamonds"):
        return KernelCapabilities(root=fs.root, sysfs=False, probed_by="no DAMON sysfs tree")
    nr = fs.read_int("kdamonds/nr_kdamonds")
    spare = next((k for k in sorted(set(owned)) if k < nr and _is_spare(fs, k)), None)
    if stage and (nr == 0 or spare is not None):
        kd = join("kdamonds", spare if spare is not None else 0)
        try:
            if spare is None:
                fs.write("kdamonds/nr_kdamonds", 1)
            dirs = _stage(fs, kd)
            return _inspect(fs, dirs, tried=True, probed_by="staged a probe configuration")
        finally:
            if spare is None:
                fs.write("kdamonds/nr_kdamonds", 0)
            else:
                fs.write(join(kd, "contexts/nr_contexts"), 0)
    if not nr:
        return KernelCapabilities(root=fs.root, sysfs=True, probed_by="no kdamond to inspect")
    dirs = _find_dirs(fs, nr)
    if not dirs.context:
        return KernelCapabilities(
            root=fs.root, sysfs=True, probed_by="existing kdamonds without contexts"
        )
    return _inspect(fs, dirs, tried=False, probed_by="read existing kdamonds")


def _is_spare(fs: Sysfs, k: int) -> bool:
    kd = join("kdamonds", k)
    return (
        fs.isdir(kd)
        and fs.read(join(kd, "state")) == "off"
        and fs.read_int(join(kd, "contexts/nr_contexts")) == 0
    )


def _stage(fs: Sysfs, kd: str) -> _Dirs:
    fs.write(join(kd, "contexts/nr_contexts"), 1)
    ctx = join(kd, "contexts/0")
    fs.write(join(ctx, "targets/nr_targets"), 1)
    fs.write(join(ctx, "schemes/nr_schemes"), 1)
    scheme = join(ctx, "schemes/0")
    dirs = _Dirs(kdamond=kd, context=ctx, target=join(ctx, "targets/0"), scheme=scheme)
    for name in ("core_filters", "ops_filters", "filters"):
        if fs.isdir(join(scheme, name)):
            fs.write(join(scheme, name, "nr_filters"), 1)
            dirs.filters[name] = join(scheme, name, "0")
    if fs.isdir(join(scheme, "quotas/goals")):
        fs.write(join(scheme, "quotas/goals/nr_goals"), 1)
        dirs.goal = join(scheme, "quotas/goals/0")
    return dirs


def _numbered(fs: Sysfs, rel_dir: str, nr_name: str) -> list[str]:
    nr_file = join(rel_dir, f"nr_{nr_name}")
    if not fs.exists(nr_file):
        return []
    return [join(rel_dir, i) for i in range(fs.read_int(nr_file)) if fs.isdir(join(rel_dir, i))]


def _find_dirs(fs: Sysfs, nr_kdamonds: int) -> _Dirs:
    """The first existing directory of each kind, reading only."""
    dirs = _Dirs()
    for k in range(nr_kdamonds):
        kd = join("kdamonds", k)
        if not fs.isdir(kd):
            continue
        dirs.kdamond = dirs.kdamond or kd
        for ctx in _numbered(fs, join(kd, "contexts"), "contexts"):
            dirs.context = dirs.context or ctx
            targets = _numbered(fs, join(ctx, "targets"), "targets")
            dirs.target = dirs.target or (targets[0] if targets else "")
            for scheme in _numbered(fs, join(ctx, "schemes"), "schemes"):
                dirs.scheme = dirs.scheme or scheme
                for name in ("core_filters", "ops_filters", "filters"):
                    found = _numbered(fs, join(scheme, name), "filters")
                    if found and name not in dirs.filters:
                        dirs.filters[name] = found[0]
                goals = _numbered(fs, join(scheme, "quotas/goals"), "goals")
                dirs.goal = dirs.goal or (goals[0] if goals else "")
    return dirs


def _feature_files(fs: Sysfs, dirs: _Dirs) -> dict[str, bool]:
    base = {"kdamond": dirs.kdamond, "context": dirs.context, "target": dirs.target}
    base["scheme"] = dirs.scheme
    files = {}
    for feature, (where, _since) in FEATURE_FILES_SINCE.items():
        kind, rel = where.split(":", 1)
        files[feature] = bool(base[kind]) and fs.exists(join(base[kind], rel))
    return files


def _accepted(fs: Sysfs, rel: str, names: Iterable[str]) -> tuple[str, ...]:
    """The names the kernel accepts when written to ``rel`` (it rejects unknown ones)."""
    ok = []
    for name in names:
        try:
            fs.write(rel, name)
        except KernelSysfsError:
            continue
        ok.append(name)
    return tuple(ok)


def _up_to(since: dict[str, str], floor: str) -> tuple[str, ...]:
    if not floor:
        return ()
    return tuple(n for n, s in since.items() if version_key(s) <= version_key(floor))


def _inspect(fs: Sysfs, dirs: _Dirs, tried: bool, probed_by: str) -> KernelCapabilities:
    files = _feature_files(fs, dirs)
    floor = max(
        (FEATURE_FILES_SINCE[k][1] for k, v in files.items() if v), key=version_key, default="5.18"
    )
    ctx, scheme = dirs.context, dirs.scheme
    if files["avail_operations"]:
        operations = tuple(fs.read(join(ctx, "avail_operations")).split())
    elif tried:
        operations = _accepted(fs, join(ctx, "operations"), KERNEL_OPERATIONS)
    else:
        operations = ("vaddr", "paddr")  # what the first sysfs (5.18) had
    if tried and scheme:
        actions = _accepted(fs, join(scheme, "action"), ACTIONS)
    else:
        actions = _up_to(ACTIONS_SINCE, floor)
    filter_dirs = tuple(n for n in ("core_filters", "ops_filters", "filters") if n in dirs.filters)
    if not filter_dirs and scheme:
        filter_dirs = tuple(
            n for n in ("core_filters", "ops_filters", "filters") if fs.isdir(join(scheme, n))
        )
    if not filter_dirs:
        filter_types: tuple[str, ...] = ()
    elif tried:
        first = dirs.filters[filter_dirs[0]]
        filter_types = _accepted(fs, join(first, "type"), (t.value for t in FilterType))
    else:
        filter_types = _up_to(FILTER_TYPES_SINCE, floor)
    a_filter = next(iter(dirs.filters.values()), "")
    allow = bool(a_filter) and fs.exists(join(a_filter, "allow"))
    if a_filter == "" and filter_dirs:
        allow = version_key(floor) >= version_key("6.14")
    goal_metrics: tuple[str, ...] = ()
    if files["quota_goals"]:
        if dirs.goal and fs.exists(join(dirs.goal, "target_metric")) and tried:
            candidates = (m.value for m in GoalMetric)
            goal_metrics = _accepted(fs, join(dirs.goal, "target_metric"), candidates)
        elif dirs.goal and not fs.exists(join(dirs.goal, "target_metric")):
            goal_metrics = ("user_input",)  # 6.8: goals without a metric file
        else:
            goal_metrics = _up_to(GOAL_METRICS_SINCE, floor)
    goal_tuners: tuple[str, ...] = ()
    if files["goal_tuner"]:
        tuner_file = join(scheme, "quotas/goal_tuner")
        if tried:
            goal_tuners = _accepted(fs, tuner_file, (t.value for t in GoalTuner))
        else:
            goal_tuners = _up_to(GOAL_TUNERS_SINCE, floor)
    stats_fields = tuple(f for f in STATS_FIELDS if scheme and fs.exists(join(scheme, "stats", f)))
    tried_fields: tuple[str, ...] = ()
    if files["tried_regions"]:
        # A tried region's files appear only with regions; sz_filter_passed came with the
        # sz_ops_filter_passed stat (6.14).
        tried_fields = TRIED_REGION_FIELDS[:4]
        if files["sz_ops_filter_passed"]:
            tried_fields = TRIED_REGION_FIELDS
    return KernelCapabilities(
        root=fs.root,
        sysfs=True,
        inspected=True,
        probed_by=probed_by,
        operations=operations,
        actions=actions,
        filter_dirs=filter_dirs,
        filter_types=filter_types,
        allow_filters=allow,
        goal_metrics=goal_metrics,
        goal_tuners=goal_tuners,
        stats_fields=stats_fields,
        tried_region_fields=tried_fields,
        files=files,
    )


# -- requirements -----------------------------------------------------------------------------


def missing_features(
    caps: KernelCapabilities, contexts: Sequence[ContextConfig]
) -> list[tuple[str, str]]:
    """What ``contexts`` need that ``caps`` lacks: (what, first release), without duplicates."""
    if not caps.sysfs:
        return [(f"the DAMON sysfs interface ({caps.root}/kdamonds)", "5.18")]
    missing: list[tuple[str, str]] = []

    def need(ok: bool, what: str, since: str) -> None:
        if not ok and (what, since) not in missing:
            missing.append((what, since))

    for ctx in contexts:
        since = OPERATIONS_SINCE.get(ctx.ops, "5.15")
        need(ctx.ops in caps.operations, f"the operations set {ctx.ops}", since)
        if ctx.attrs.intervals_goal.enabled:
            what = "monitoring intervals auto-tuning (intervals_goal)"
            need(caps.has("intervals_goal"), what, "6.15")
        for scheme in ctx.schemes:
            _scheme_needs(caps, scheme, need)
    return missing


def _scheme_needs(caps: KernelCapabilities, scheme: Scheme, need: Any) -> None:
    action = str(scheme.action)
    need(action in caps.actions, f"the DAMOS action {action}", ACTIONS_SINCE.get(action, "?"))
    if scheme.apply_interval_us:
        need(caps.has("apply_interval"), "DAMOS apply intervals (apply_interval_us)", "6.7")
    if scheme.target_nid is not None or scheme.action in (Action.MIGRATE_HOT, Action.MIGRATE_COLD):
        need(caps.has("target_nid"), "DAMOS migration target node (target_nid)", "6.11")
    quota = scheme.quota
    if quota.goals:
        need(caps.has("quota_goals"), "DAMOS quota goals", "6.8")
        if caps.has("quota_goals"):
            for goal in quota.goals:
                metric = str(goal.metric)
                since = GOAL_METRICS_SINCE.get(metric, "?")
                need(metric in caps.goal_metrics, f"the quota goal metric {metric}", since)
    if quota.goal_tuner != GoalTuner.CONSIST:
        tuner = str(quota.goal_tuner)
        need(tuner in caps.goal_tuners, f"the quota goal tuner {tuner}", "7.1")
    if scheme.filters:
        need(bool(caps.filter_dirs), "DAMOS filters", "6.3")
    for f in scheme.filters:
        ftype = str(f.type)
        if caps.filter_dirs:
            since = FILTER_TYPES_SINCE.get(ftype, "?")
            need(ftype in caps.filter_types, f"the DAMOS filter type {ftype}", since)
        if f.allow:
            need(caps.allow_filters, "allow filters (DAMOS filter 'allow')", "6.14")


def require(caps: KernelCapabilities, contexts: Sequence[ContextConfig]) -> None:
    """Raise one :class:`KernelFeatureMissing` naming all that ``contexts`` need and lack."""
    if caps.sysfs and not caps.inspected:
        raise FeatureMissing(
            f"cannot tell what the DAMON sysfs tree at {caps.root} supports ({caps.probed_by})"
        )
    missing = missing_features(caps, contexts)
    if missing:
        raise KernelFeatureMissing(missing)
