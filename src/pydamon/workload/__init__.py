"""A real workload program for tests, demos and benchmarks.

``python -m pydamon.workload PATTERN --size 64M`` maps the areas of the named workload (the same
names and specs as the simulated workloads of :mod:`pydamon.ops.sim.workloads`: ``hotcold``,
``stairs``, ``zigzag``, ``phases``, ``hotspot``) with anonymous ``mmap``, fills every page with a
known pattern, prints one JSON line with its pid and the virtual address ranges of its areas, then
accesses the areas following the workload's phases. See :mod:`pydamon.workload.program`.
"""

from pydamon.workload.program import Workload, WorkloadArea, main

__all__ = ["Workload", "WorkloadArea", "main"]
