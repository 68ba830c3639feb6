"""System metrics for watermarks and quota goals, with pluggable sources.

The kernel reads these from its own counters; user space reads the files that expose them:

- ``free_mem_rate`` (watermarks): ``MemFree * 1000 / MemTotal`` from ``/proc/meminfo``.
- ``some_mem_psi_us``: the ``some`` ``total=`` of ``/proc/pressure/memory`` (µs, cumulative).
- ``node_mem_{used,free}_bp``: ``/sys/devices/system/node/node<N>/meminfo`` (``/proc/meminfo``
  when no node is given).
- ``node_memcg_{used,free}_bp``: the LRU pages (anon + file) of a cgroup v2 group on a node
  (``memory.numa_stat``; ``memory.stat`` when no node is given) per the node's total memory.
- ``{active,inactive}_mem_bp``: ``Active`` / ``Inactive`` of ``/proc/meminfo`` per their sum.

A simulation provides its own :class:`MetricsSource` (the sim operations set exposes one), and
tests can feed values with :class:`ManualMetrics`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

BP = 10000


class MetricsSource:
    """Where watermarks and quota goals read system state. Subclass and override.

    Every method returns the kernel's unit: per mille for ``free_mem_rate_permil``, µs for
    ``some_mem_psi_total_us``, basis points for the ``*_bp`` ones; ``None`` where the value is
    unavailable (watermarks then treat the metric as unknown and keep schemes active).
    """

    def free_mem_rate_permil(self) -> int | None:
        raise NotImplementedError

    def some_mem_psi_total_us(self) -> int | None:
        raise NotImplementedError

    def node_mem_bp(self, nid: int | None, used: bool) -> int:
        raise NotImplementedError

    def node_memcg_bp(self, nid: int | None, path: str | None, used: bool) -> int:
        raise NotImplementedError

    def lru_mem_bp(self, active: bool) -> int:
        raise NotImplementedError


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` (or a node's meminfo) as ``{field: kB}``."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        words = line.replace(":", " ").split()
        # node meminfo lines are "Node 0 MemTotal: 123 kB"
        if len(words) >= 4 and words[0] == "Node":
            words = words[2:]
        if len(words) >= 2:
            try:
                out[words[0]] = int(words[1])
            except ValueError:
                continue
    return out


def parse_psi_some_total_us(text: str) -> int | None:
    """The ``some`` line's ``total=`` of a PSI file (µs), or None."""
    for line in text.splitlines():
        words = line.split()
        if words and words[0] == "some":
            for word in words[1:]:
                if word.startswith("total="):
                    return int(word[len("total=") :])
    return None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _ratio_bp(numerator: int, total: int) -> int:
    return numerator * BP // total


@dataclass
class SystemMetrics(MetricsSource):
    """The running system's metrics from /proc and /sys (``root`` lets tests use a fake tree)."""

    root: str = "/"
    cgroup_root: str = "/sys/fs/cgroup"

    def _path(self, *parts: str) -> str:
        return os.path.join(self.root, *[p.lstrip("/") for p in parts])

    def _meminfo(self, nid: int | None = None) -> dict[str, int] | None:
        if nid is None:
            text = _read(self._path("proc/meminfo"))
        else:
            text = _read(self._path(f"sys/devices/system/node/node{nid}/meminfo"))
        return None if text is None else parse_meminfo(text)

    def free_mem_rate_permil(self) -> int | None:
        info = self._meminfo()
        if not info or not info.get("MemTotal"):
            return None
        return info.get("MemFree", 0) * 1000 // info["MemTotal"]

    def some_mem_psi_total_us(self) -> int | None:
        text = _read(self._path("proc/pressure/memory"))
        return None if text is None else parse_psi_some_total_us(text)

    def node_mem_bp(self, nid: int | None, used: bool) -> int:
        info = self._meminfo(nid)
        if info is None:
            # damos_get_node_mem_bp() on an invalid node
            return 0 if used else BP
        total, free = info.get("MemTotal", 0), info.get("MemFree", 0)
        if not total or total < free:
            return BP if used else 0
        return _ratio_bp(total - free if used else free, total)

    def _memcg_lru_kb(self, nid: int | None, path: str | None) -> int | None:
        if not path:
            return None
        group = os.path.join(self.root, self.cgroup_root.lstrip("/"), path.lstrip("/"))
        keys = ("active_anon", "inactive_anon", "active_file", "inactive_file")
        if nid is None:
            text = _read(os.path.join(group, "memory.stat"))
            if text is None:
                return None
            total = 0
            for line in text.splitlines():
                words = line.split()
                if len(words) == 2 and words[0] in keys:
                    total += int(words[1])
            return total // 1024
        text = _read(os.path.join(group, "memory.numa_stat"))
        if text is None:
            return None
        total = 0
        for line in text.splitlines():
            words = line.split()
            if words and words[0] in keys:
                for word in words[1:]:
                    if word.startswith(f"N{nid}="):
                        total += int(word.split("=", 1)[1])
        return total // 1024

    def node_memcg_bp(self, nid: int | None, path: str | None, used: bool) -> int:
        info = self._meminfo(nid)
        used_kb = self._memcg_lru_kb(nid, path)
        if info is None or used_kb is None:
            # invalid node or memcg: damos_get_node_memcg_used_bp()'s fallback
            return 0 if used else BP
        total = info.get("MemTotal", 0)
        if not total or total < used_kb:
            return BP if used else 0
        return _ratio_bp(used_kb if used else total - used_kb, total)

    def lru_mem_bp(self, active: bool) -> int:
        info = self._meminfo() or {}
        act, inact = info.get("Active", 0), info.get("Inactive", 0)
        total = max(act + inact, 1)
        return _ratio_bp(act if active else inact, total)


@dataclass
class ManualMetrics(MetricsSource):
    """Metrics set by hand (tests, what-if studies, or a simulation feeding its values).

    Set the attributes directly; ``psi_total_us`` is cumulative like the kernel's counter.
    """

    free_mem_permil: int | None = None
    psi_total_us: int | None = 0
    node_used_bp: dict[int | None, int] = field(default_factory=dict)
    memcg_used_bp: dict[tuple[int | None, str | None], int] = field(default_factory=dict)
    active_bp: int = 0

    def free_mem_rate_permil(self) -> int | None:
        return self.free_mem_permil

    def some_mem_psi_total_us(self) -> int | None:
        return self.psi_total_us

    def node_mem_bp(self, nid: int | None, used: bool) -> int:
        value = self.node_used_bp.get(nid, 0)
        return value if used else BP - value

    def node_memcg_bp(self, nid: int | None, path: str | None, used: bool) -> int:
        value = self.memcg_used_bp.get((nid, path), 0)
        return value if used else BP - value

    def lru_mem_bp(self, active: bool) -> int:
        return self.active_bp if active else BP - self.active_bp
