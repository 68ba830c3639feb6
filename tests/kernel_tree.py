"""A fake kernel for host tests: DAMON sysfs trees under a temporary directory, laid out like
real 6.1, 6.12 and 7.1 kernels, and a :class:`~pydamon.kernel.SysfsIO` that does on writes what
the kernel does.

The layouts are written out per kernel from the kernel's documentation (usage.rst of each release,
../shared/reference/damon.md §3.1) and damo's ``_damon_sysfs.py``, independently of the backend's
feature table. The fake kernel: writing ``nr_*`` removes the numbered children and creates that
many with default files; unknown names (action, filter type, goal metric, tuner, operations set,
watermark metric) and non-numbers get ``EINVAL``; ``nr_kdamonds`` while a kdamond runs gets
``EBUSY``; ``state`` commands act on what the test put in :attr:`FakeKernel.kernel_stats` etc.
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pydamon.kernel import SysfsIO

BASE_ACTIONS = ("willneed", "cold", "pageout", "hugepage", "nohugepage", "lru_prio", "lru_deprio")


@dataclass(frozen=True)
class Layout:
    name: str
    kdamond: tuple[str, ...]
    context: tuple[str, ...]
    intervals_goal: bool
    target: tuple[str, ...]
    scheme: tuple[str, ...]  # files of schemes/<S>/
    scheme_dirs: tuple[str, ...]  # optional directories of schemes/<S>/
    quotas: tuple[str, ...]
    goal: tuple[str, ...]
    filter: tuple[str, ...]
    stats: tuple[str, ...]
    tried_regions_total_bytes: bool
    tried_region: tuple[str, ...]
    operations: tuple[str, ...] = ("vaddr", "fvaddr", "paddr")
    actions: tuple[str, ...] = ()
    filter_types: tuple[str, ...] = ()
    goal_metrics: tuple[str, ...] = ()
    goal_tuners: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()


_STATS5 = ("nr_tried", "sz_tried", "nr_applied", "sz_applied", "qt_exceeds")
_COMMANDS_61 = ("on", "off", "commit", "update_schemes_stats")

LINUX_6_1 = Layout(
    name="6.1",
    kdamond=("state", "pid"),
    context=("avail_operations", "operations"),
    intervals_goal=False,
    target=("pid_target",),
    scheme=("action",),
    scheme_dirs=(),
    quotas=("ms", "bytes", "reset_interval_ms"),
    goal=(),
    filter=(),
    stats=_STATS5,
    tried_regions_total_bytes=False,
    tried_region=(),
    actions=(*BASE_ACTIONS, "stat"),
    commands=_COMMANDS_61,
)

LINUX_6_12 = Layout(
    name="6.12",
    kdamond=("state", "pid"),
    context=("avail_operations", "operations"),
    intervals_goal=False,
    target=("pid_target",),
    scheme=("action", "apply_interval_us", "target_nid"),
    scheme_dirs=("filters", "tried_regions", "goals"),
    quotas=("ms", "bytes", "reset_interval_ms", "effective_bytes"),
    goal=("target_metric", "target_value", "current_value"),
    filter=("type", "matching", "memcg_path", "addr_start", "addr_end", "damon_target_idx"),
    stats=_STATS5,
    tried_regions_total_bytes=True,
    tried_region=("start", "end", "nr_accesses", "age"),
    actions=(*BASE_ACTIONS, "migrate_hot", "migrate_cold", "stat"),
    filter_types=("anon", "memcg", "young", "addr", "target"),
    goal_metrics=("user_input", "some_mem_psi_us"),
    commands=(
        *_COMMANDS_61,
        "commit_schemes_quota_goals",
        "update_schemes_tried_bytes",
        "update_schemes_tried_regions",
        "clear_schemes_tried_regions",
        "update_schemes_effective_quotas",
    ),
)

LINUX_7_1 = Layout(
    name="7.1",
    kdamond=("state", "pid", "refresh_ms"),
    context=("avail_operations", "operations", "addr_unit"),
    intervals_goal=True,
    target=("pid_target", "obsolete_target"),
    scheme=("action", "apply_interval_us", "target_nid"),
    scheme_dirs=("core_filters", "ops_filters", "filters", "tried_regions", "goals", "dests"),
    quotas=("ms", "bytes", "reset_interval_ms", "effective_bytes", "goal_tuner"),
    goal=("target_metric", "target_value", "current_value", "nid", "path"),
    filter=(
        "type",
        "matching",
        "allow",
        "memcg_path",
        "addr_start",
        "addr_end",
        "damon_target_idx",
        "min",
        "max",
    ),
    stats=(*_STATS5, "sz_ops_filter_passed", "nr_snapshots", "max_nr_snapshots"),
    tried_regions_total_bytes=True,
    tried_region=("start", "end", "nr_accesses", "age", "sz_filter_passed"),
    actions=(*BASE_ACTIONS, "migrate_hot", "migrate_cold", "stat"),
    filter_types=(
        "anon",
        "active",
        "memcg",
        "young",
        "hugepage_size",
        "unmapped",
        "addr",
        "target",
    ),
    goal_metrics=(
        "user_input",
        "some_mem_psi_us",
        "node_mem_used_bp",
        "node_mem_free_bp",
        "node_memcg_used_bp",
        "node_memcg_free_bp",
        "active_mem_bp",
        "inactive_mem_bp",
    ),
    goal_tuners=("consist", "temporal"),
    commands=(*LINUX_6_12.commands, "update_tuned_intervals"),
)

LAYOUTS = {lay.name: lay for lay in (LINUX_6_1, LINUX_6_12, LINUX_7_1)}

#: Files whose value is a name, and the default the kernel gives them.
_DEFAULTS = {
    "state": "off",
    "pid": "-1",
    "operations": "vaddr",
    "action": "stat",
    "metric": "none",
    "type": "anon",
    "matching": "N",
    "allow": "N",
    "memcg_path": "",
    "path": "",
    "target_metric": "user_input",
    "goal_tuner": "consist",
    "obsolete_target": "N",
    "target_nid": "-1",
    "sample_us": "5000",
    "aggr_us": "100000",
    "update_us": "60000000",
    "addr_unit": "1",
}
_BOOL_FILES = {"matching", "allow", "obsolete_target"}
_TEXT_FILES = {"memcg_path", "path", "avail_operations"}
_CHILD_KIND = {
    "kdamonds": "kdamond",
    "contexts": "context",
    "targets": "target",
    "regions": "region",
    "schemes": "scheme",
    "goals": "goal",
    "filters": "filter",
    "core_filters": "filter",
    "ops_filters": "filter",
    "dests": "dest",
}


def _oserror(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


@dataclass
class FakeKernel(SysfsIO):
    """Plain file IO on ``root`` plus what the kernel does on writes."""

    root: Path
    layout: Layout
    #: Raise EACCES on every write, or every read (an unprivileged process).
    deny_writes: bool = False
    deny_reads: bool = False
    #: The next ``busy`` reads and writes fail with EBUSY, as the kernel's do while another user
    #: holds damon_sysfs_lock (its show/store handlers take it with mutex_trylock).
    busy: int = 0
    #: How many reads and writes met EBUSY.
    nr_busy: int = 0
    #: What the kernel would report on the state commands, by (kdamond, context, scheme).
    kernel_stats: dict[tuple[int, int, int], dict[str, int]] = field(default_factory=dict)
    kernel_tried: dict[tuple[int, int, int], list[dict[str, int]]] = field(default_factory=dict)
    kernel_esz: dict[tuple[int, int, int], int] = field(default_factory=dict)
    kernel_tuned: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    #: Every state command written: (kdamond, command).
    commands: list[tuple[int, str]] = field(default_factory=list)
    next_pid: int = 4242

    def __post_init__(self) -> None:
        self.put("kdamonds/nr_kdamonds", "0")

    # -- tree building ------------------------------------------------------------------------
    def put(self, rel: str, value: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n" if value else "")

    def _files(self, d: str, names: tuple[str, ...]) -> None:
        for name in names:
            self.put(f"{d}/{name}", _DEFAULTS.get(name, "0"))

    def _make(self, kind: str, d: str) -> None:
        lay = self.layout
        if kind == "kdamond":
            self._files(d, lay.kdamond)
            self.put(f"{d}/contexts/nr_contexts", "0")
        elif kind == "context":
            self._files(d, lay.context)
            self.put(f"{d}/avail_operations", "\n".join(lay.operations))
            a = f"{d}/monitoring_attrs"
            self._files(f"{a}/intervals", ("sample_us", "aggr_us", "update_us"))
            if lay.intervals_goal:
                goal = ("access_bp", "aggrs", "min_sample_us", "max_sample_us")
                self._files(f"{a}/intervals/intervals_goal", goal)
            self.put(f"{a}/nr_regions/min", "10")
            self.put(f"{a}/nr_regions/max", "1000")
            self.put(f"{d}/targets/nr_targets", "0")
            self.put(f"{d}/schemes/nr_schemes", "0")
        elif kind == "target":
            self._files(d, lay.target)
            self.put(f"{d}/regions/nr_regions", "0")
        elif kind == "region":
            self._files(d, ("start", "end"))
        elif kind == "scheme":
            self._make_scheme(d)
        elif kind == "goal":
            self._files(d, lay.goal)
        elif kind == "filter":
            self._files(d, lay.filter)
        elif kind == "dest":
            self._files(d, ("id", "weight"))

    def _make_scheme(self, d: str) -> None:
        lay = self.layout
        self._files(d, lay.scheme)
        for part in ("sz", "nr_accesses", "age"):
            self._files(f"{d}/access_pattern/{part}", ("min", "max"))
        self._files(f"{d}/quotas", lay.quotas)
        self._files(f"{d}/quotas/weights", ("sz_permil", "nr_accesses_permil", "age_permil"))
        if "goals" in lay.scheme_dirs:
            self.put(f"{d}/quotas/goals/nr_goals", "0")
        self._files(f"{d}/watermarks", ("metric", "interval_us", "high", "mid", "low"))
        for name in ("core_filters", "ops_filters", "filters"):
            if name in lay.scheme_dirs:
                self.put(f"{d}/{name}/nr_filters", "0")
        self._files(f"{d}/stats", lay.stats)
        if "tried_regions" in lay.scheme_dirs:
            (self.root / d / "tried_regions").mkdir(parents=True)
            if lay.tried_regions_total_bytes:
                self.put(f"{d}/tried_regions/total_bytes", "0")
        if "dests" in lay.scheme_dirs:
            self.put(f"{d}/dests/nr_dests", "0")

    def _renumber(self, parent: str, kind: str, count: int) -> None:
        for child in (self.root / parent).iterdir():
            if child.is_dir() and child.name.isdigit():
                shutil.rmtree(child)
        for i in range(count):
            self._make(kind, f"{parent}/{i}")

    # -- the kernel's side of reads and writes ------------------------------------------------
    def _lock(self, path: str) -> None:
        if self.busy > 0:
            self.busy -= 1
            self.nr_busy += 1
            raise _oserror(errno.EBUSY, path)

    def read(self, path: str) -> str:
        if self.deny_reads:
            raise _oserror(errno.EACCES, path)
        self._lock(path)
        return super().read(path)

    def write(self, path: str, value: str) -> None:
        if self.deny_writes:
            raise _oserror(errno.EACCES, path)
        self._lock(path)
        rel = os.path.relpath(path, self.root)
        if rel.startswith("..") or not os.path.isfile(path):
            raise _oserror(errno.ENOENT, path)
        parts = rel.split("/")
        name, text = parts[-1], value.strip()
        if name == "state":
            self._state(int(parts[1]), text, path)
            return
        self._validate(parts, text, path)
        if name in _BOOL_FILES:
            text = "Y" if text in ("Y", "y", "1") else "N"
        # what the kernel shows on reading, whatever the writer's spelling
        super().write(path, text + "\n" if text else "")
        if parts[-2] in _CHILD_KIND and name == "nr_" + parts[-2].split("_")[-1]:
            parent = "/".join(parts[:-1])
            self._renumber(parent, _CHILD_KIND[parts[-2]], int(text))

    def _validate(self, parts: list[str], text: str, path: str) -> None:
        lay, name = self.layout, parts[-1]
        allowed: tuple[str, ...] | None = None
        if name == "action":
            allowed = lay.actions
        elif name == "type":
            allowed = lay.filter_types
        elif name == "target_metric":
            allowed = lay.goal_metrics
        elif name == "goal_tuner":
            allowed = lay.goal_tuners
        elif name == "operations":
            allowed = ("vaddr", "fvaddr", "paddr")  # checked for availability only at "on"
        elif name == "metric":
            allowed = ("none", "free_mem_rate")
        elif name in _BOOL_FILES:
            allowed = ("Y", "N", "y", "n", "1", "0")
        if allowed is not None:
            if text not in allowed:
                raise _oserror(errno.EINVAL, path)
            return
        if name in _TEXT_FILES:
            return
        try:
            number = int(text)
        except ValueError:
            raise _oserror(errno.EINVAL, path) from None
        if name == "nr_kdamonds" and any(self._state_of(k) == "on" for k in self._kdamonds()):
            raise _oserror(errno.EBUSY, path)
        if name.startswith("nr_") and number < 0:
            raise _oserror(errno.EINVAL, path)

    def _kdamonds(self) -> list[int]:
        return list(range(int((self.root / "kdamonds/nr_kdamonds").read_text())))

    def _state_of(self, k: int) -> str:
        return (self.root / f"kdamonds/{k}/state").read_text().strip()

    def _state(self, k: int, command: str, path: str) -> None:
        if command not in self.layout.commands:
            raise _oserror(errno.EINVAL, path)
        kd = f"kdamonds/{k}"
        running = self._state_of(k) == "on"
        if command == "on":
            if running:
                raise _oserror(errno.EBUSY, path)
            self.put(f"{kd}/state", "on")
            self.put(f"{kd}/pid", str(self.next_pid))
            self.next_pid += 1
        elif not running:
            raise _oserror(errno.EINVAL, path)  # commands need a running kdamond
        elif command == "off":
            self.put(f"{kd}/state", "off")
            self.put(f"{kd}/pid", "-1")
        else:
            self._scheme_command(k, command)
        self.commands.append((k, command))

    def _scheme_dirs(self, k: int) -> list[tuple[tuple[int, int, int], str]]:
        found = []
        ctxs = self.root / f"kdamonds/{k}/contexts"
        for c in range(int((ctxs / "nr_contexts").read_text())):
            schemes = ctxs / str(c) / "schemes"
            for s in range(int((schemes / "nr_schemes").read_text())):
                found.append(((k, c, s), f"kdamonds/{k}/contexts/{c}/schemes/{s}"))
        return found

    def _scheme_command(self, k: int, command: str) -> None:
        if command == "update_tuned_intervals":
            for (kk, c), (sample, aggr) in self.kernel_tuned.items():
                if kk == k:
                    d = f"kdamonds/{k}/contexts/{c}/monitoring_attrs/intervals"
                    self.put(f"{d}/sample_us", str(sample))
                    self.put(f"{d}/aggr_us", str(aggr))
            return
        for key, d in self._scheme_dirs(k):
            if command == "update_schemes_stats":
                for stat, value in self.kernel_stats.get(key, {}).items():
                    if stat in self.layout.stats:
                        self.put(f"{d}/stats/{stat}", str(value))
            elif command == "update_schemes_effective_quotas" and key in self.kernel_esz:
                self.put(f"{d}/quotas/effective_bytes", str(self.kernel_esz[key]))
            elif command in ("update_schemes_tried_regions", "clear_schemes_tried_regions"):
                self._tried(d, self.kernel_tried.get(key, []), command.startswith("update"))

    def _tried(self, d: str, regions: list[dict[str, int]], fill: bool) -> None:
        self._renumber(f"{d}/tried_regions", "none", 0)
        if not fill:
            return
        for i, region in enumerate(regions):
            for name in self.layout.tried_region:
                self.put(f"{d}/tried_regions/{i}/{name}", str(region.get(name, 0)))
        if self.layout.tried_regions_total_bytes:
            total = sum(r["end"] - r["start"] for r in regions)
            self.put(f"{d}/tried_regions/total_bytes", str(total))


def tree_files(root: Path) -> dict[str, str]:
    """Every file under ``root`` and its content (to compare a tree before and after)."""
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def fake_kernel(tmp_path: Path, layout: Layout) -> FakeKernel:
    root = tmp_path / "damon-admin"
    root.mkdir()
    return FakeKernel(root=root, layout=layout)
