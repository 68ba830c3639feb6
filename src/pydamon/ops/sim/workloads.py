"""Workload specs for the simulated address space, and the named workloads.

A workload is a set of memory :class:`Area`\\ s laid out like a process's address space (heap
areas low, mmap areas high and growing down, the stack at the top, with gaps between them) and a
sequence of :class:`Phase`\\ s. In each phase every page of an area is accessed in a *tick*
(``tick_us``, by default DAMON's default sampling interval) with the area's probability, and
:class:`HotSpot`\\ s raise the probability of a sub-range of an area that may move over time.

Specs are plain dataclasses; :func:`spec_from_dict` / :func:`load_workload` read them from a
dict, a JSON or a YAML file. :func:`get_workload` builds a named workload (``hotcold``,
``stairs``, ``zigzag``, ``phases``, ``hotspot``) scaled to a given memory size; the real-memory
workload program uses the same names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pydamon.core.regions import PAGE_SIZE
from pydamon.extras import install_hint

MiB = 1 << 20
GiB = 1 << 30

#: Default layout bases, like an x86-64 process: heap after the program, mmap areas below the
#: stack (growing down), stack at the top of the user address space.
HEAP_BASE = 0x5555_5555_0000
MMAP_TOP = 0x7F00_0000_0000
STACK_TOP = 0x7FFF_FFFF_0000
#: Gap left between neighbouring areas of the same kind (small compared to the two big gaps).
AREA_GAP_BYTES = 64 * 1024

AREA_KINDS = ("heap", "mmap", "stack")
MOTIONS = ("wrap", "bounce")


class WorkloadError(ValueError):
    """A workload spec that cannot be simulated (one-line message)."""


@dataclass
class Area:
    """A mapped memory area. ``kind`` decides where it is laid out; ``addr`` pins it."""

    name: str
    size_bytes: int
    kind: str = "mmap"
    addr: int | None = None


@dataclass
class HotSpot:
    """A sub-range of ``area`` accessed with ``access_prob`` per page per tick.

    It starts ``offset_bytes`` into the area and, if ``period_us`` > 0, moves through the whole
    area once per period: ``wrap`` moves forward and wraps around, ``bounce`` moves forward then
    back (a zigzag). Its position depends on the time since the start of the workload.
    """

    area: str
    size_bytes: int
    access_prob: float
    offset_bytes: int = 0
    period_us: int = 0
    motion: str = "wrap"


@dataclass
class Phase:
    """``duration_us`` of time during which each area's pages are accessed with ``access``."""

    duration_us: int
    #: Per-area probability that a page is accessed in one tick (areas not named: 0).
    access: dict[str, float] = field(default_factory=dict)
    hotspots: list[HotSpot] = field(default_factory=list)
    name: str = ""


@dataclass
class WorkloadSpec:
    """A simulated process: its memory areas and its access phases."""

    name: str
    areas: list[Area]
    phases: list[Phase]
    #: Time quantum of the access model: a page is accessed or not in each tick.
    tick_us: int = 5000
    #: Repeat the phases forever (else the last phase lasts until ``end_us``).
    repeat: bool = True
    #: The simulated process exits at this time (µs since the start); None: runs forever.
    end_us: int | None = None
    #: Memory of the simulated machine (free_mem_rate); 0 means twice the mapped size.
    memory_total_bytes: int = 0
    #: Memory used by everything else on the simulated machine.
    other_used_bytes: int = 0
    #: Stall a major fault (re-reading a paged-out page) costs, for the simulated PSI.
    major_fault_us: int = 20

    def validate(self) -> None:
        if not self.areas:
            raise WorkloadError(f"workload {self.name!r} has no memory areas; add one")
        names = [a.name for a in self.areas]
        if len(set(names)) != len(names):
            raise WorkloadError(f"workload {self.name!r} has duplicate area names {names}")
        for a in self.areas:
            if a.size_bytes < PAGE_SIZE or a.size_bytes % PAGE_SIZE:
                raise WorkloadError(
                    f"area {a.name!r} size {a.size_bytes} must be a positive multiple of "
                    f"{PAGE_SIZE}"
                )
            if a.kind not in AREA_KINDS:
                raise WorkloadError(f"area {a.name!r} kind {a.kind!r}: use one of {AREA_KINDS}")
            if a.addr is not None and a.addr % PAGE_SIZE:
                raise WorkloadError(f"area {a.name!r} addr {a.addr:#x} is not page-aligned")
        if not self.phases:
            raise WorkloadError(f"workload {self.name!r} has no phases; add one")
        if self.tick_us <= 0:
            raise WorkloadError(f"tick_us must be positive, not {self.tick_us}")
        for p in self.phases:
            if p.duration_us <= 0:
                raise WorkloadError(f"phase {p.name!r} duration_us must be positive")
            for area, prob in p.access.items():
                if area not in names:
                    raise WorkloadError(f"phase {p.name!r} names unknown area {area!r}")
                if not 0.0 <= prob <= 1.0:
                    raise WorkloadError(f"phase {p.name!r} probability {prob} not in [0, 1]")
            for h in p.hotspots:
                if h.area not in names:
                    raise WorkloadError(f"hot spot names unknown area {h.area!r}")
                if not 0.0 <= h.access_prob <= 1.0:
                    raise WorkloadError(f"hot spot probability {h.access_prob} not in [0, 1]")
                if h.size_bytes <= 0 or h.period_us < 0 or h.offset_bytes < 0:
                    raise WorkloadError("hot spot size must be positive, offset/period >= 0")
                if h.motion not in MOTIONS:
                    raise WorkloadError(f"hot spot motion {h.motion!r}: use one of {MOTIONS}")

    def layout(self) -> list[tuple[str, int, int]]:
        """``(name, start, end)`` of every area, sorted by address."""
        out: list[tuple[str, int, int]] = []
        heap_next = HEAP_BASE
        mmap_next = MMAP_TOP
        for a in self.areas:
            if a.addr is not None:
                start = a.addr
            elif a.kind == "heap":
                start = heap_next
                heap_next = start + a.size_bytes + AREA_GAP_BYTES
            elif a.kind == "mmap":
                start = mmap_next - a.size_bytes
                mmap_next = start - AREA_GAP_BYTES
            else:
                start = STACK_TOP - a.size_bytes
            out.append((a.name, start, start + a.size_bytes))
        out.sort(key=lambda x: x[1])
        for (n1, _, e1), (n2, s2, _) in zip(out, out[1:]):
            if s2 < e1:
                raise WorkloadError(f"areas {n1!r} and {n2!r} overlap; make them smaller")
        return out

    @property
    def mapped_bytes(self) -> int:
        return sum(a.size_bytes for a in self.areas)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def spec_from_dict(data: dict[str, Any]) -> WorkloadSpec:
    """Build (and validate) a spec from plain data, as read from JSON or YAML."""
    try:
        areas = [Area(**a) for a in data["areas"]]
        phases = [
            Phase(
                duration_us=int(p["duration_us"]),
                access={str(k): float(v) for k, v in (p.get("access") or {}).items()},
                hotspots=[HotSpot(**h) for h in p.get("hotspots") or []],
                name=str(p.get("name", "")),
            )
            for p in data["phases"]
        ]
        rest = {k: v for k, v in data.items() if k not in ("areas", "phases")}
        spec = WorkloadSpec(areas=areas, phases=phases, **rest)
    except (KeyError, TypeError) as err:
        raise WorkloadError(f"bad workload spec: {err}; see pydamon.ops.sim.workloads") from None
    spec.validate()
    return spec


def load_workload(path: str) -> WorkloadSpec:
    """Read a workload spec from a ``.json`` or ``.yaml``/``.yml`` file."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as err:
        raise WorkloadError(f"cannot read workload file {path}: {err.strerror}") from None
    if os.path.splitext(path)[1] in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise WorkloadError(
                f"YAML workloads need pyyaml: {install_hint('pyyaml', 'yaml')}"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise WorkloadError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise WorkloadError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise WorkloadError(f"{path} must hold a mapping with 'name', 'areas' and 'phases'")
    return spec_from_dict(data)


# -- named workloads -----------------------------------------------------------------------------


def _pages(nbytes: float) -> int:
    """Round to a positive number of pages, in bytes."""
    return max(int(nbytes) // PAGE_SIZE, 1) * PAGE_SIZE


def hotcold(total_bytes: int = GiB) -> WorkloadSpec:
    """A hot heap area (10%), a warm (25%) and a cold (60%) mmap area, and a busy stack."""
    return WorkloadSpec(
        name="hotcold",
        areas=[
            Area("hot", _pages(total_bytes * 0.10), "heap"),
            Area("warm", _pages(total_bytes * 0.25), "mmap"),
            Area("cold", _pages(total_bytes * 0.60), "mmap"),
            Area("stack", _pages(min(total_bytes * 0.05, 8 * MiB)), "stack"),
        ],
        phases=[
            Phase(
                duration_us=1_000_000_000,
                access={"hot": 0.8, "warm": 0.2, "cold": 0.0, "stack": 0.5},
                name="steady",
            )
        ],
    )


def stairs(total_bytes: int = GiB, nr_steps: int = 8, step_us: int = 2_000_000) -> WorkloadSpec:
    """Areas accessed one after another, each for ``step_us``: a staircase on the heatmap."""
    size = _pages(total_bytes / nr_steps)
    names = [f"step{i}" for i in range(nr_steps)]
    return WorkloadSpec(
        name="stairs",
        areas=[Area(n, size, "heap") for n in names],
        phases=[Phase(step_us, {n: 0.9}, name=n) for n in names],
    )


def zigzag(total_bytes: int = GiB, nr_steps: int = 5, step_us: int = 2_000_000) -> WorkloadSpec:
    """Like :func:`stairs`, but going up then down the areas."""
    size = _pages(total_bytes / nr_steps)
    names = [f"area{i}" for i in range(nr_steps)]
    order = names + names[-2:0:-1]
    return WorkloadSpec(
        name="zigzag",
        areas=[Area(n, size, "mmap") for n in names],
        phases=[Phase(step_us, {n: 0.9}, name=n) for n in order],
    )


def phases(total_bytes: int = GiB, phase_us: int = 5_000_000) -> WorkloadSpec:
    """A phase change: area ``a`` is hot and ``b`` cold, then the other way round."""
    size = _pages(total_bytes / 2)
    return WorkloadSpec(
        name="phases",
        areas=[Area("a", size, "heap"), Area("b", size, "mmap")],
        phases=[
            Phase(phase_us, {"a": 0.8, "b": 0.0}, name="a-hot"),
            Phase(phase_us, {"a": 0.0, "b": 0.8}, name="b-hot"),
        ],
    )


def hotspot(total_bytes: int = GiB, period_us: int = 20_000_000) -> WorkloadSpec:
    """A hot spot of 1/16 of a mostly idle area, moving through it once per ``period_us``."""
    size = _pages(total_bytes * 0.95)
    return WorkloadSpec(
        name="hotspot",
        areas=[
            Area("data", size, "mmap"),
            Area("stack", _pages(min(total_bytes * 0.05, 8 * MiB)), "stack"),
        ],
        phases=[
            Phase(
                duration_us=1_000_000_000,
                access={"data": 0.01, "stack": 0.5},
                hotspots=[HotSpot("data", _pages(size / 16), 0.9, period_us=period_us)],
                name="moving",
            )
        ],
    )


#: Named workloads: name -> factory taking ``total_bytes``.
WORKLOADS: dict[str, Callable[..., WorkloadSpec]] = {
    "hotcold": hotcold,
    "stairs": stairs,
    "zigzag": zigzag,
    "phases": phases,
    "hotspot": hotspot,
}


def get_workload(name: str, total_bytes: int = GiB, **kwargs: Any) -> WorkloadSpec:
    """The named workload scaled to about ``total_bytes`` of mapped memory."""
    try:
        factory = WORKLOADS[name]
    except KeyError:
        raise WorkloadError(
            f"unknown workload {name!r}; use one of {', '.join(WORKLOADS)}"
        ) from None
    if total_bytes < 64 * PAGE_SIZE:
        raise WorkloadError(f"workload size {total_bytes} too small; use at least 256 KiB")
    spec = factory(total_bytes, **kwargs)
    spec.validate()
    return spec
