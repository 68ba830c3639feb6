"""What the running kernel offers pydamon, detected once (``pydamon features``).

Every check only reads (the page_idle bitmap check writes the idle bit of one page of this
process's own memory; the DAMON sysfs check only looks whether the directory exists: pydamon never
writes there). :func:`require` raises :class:`FeatureMissing` with a one-line message saying what
is missing and what to do.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from functools import cache

from pydamon.core.errors import FeatureMissing, RealMemoryError, TargetGone
from pydamon.kernel import DEFAULT_ROOT, KernelCapabilities, probe
from pydamon.ops.probe import (
    NEEDS,
    AccessCheckPath,
    Feature,
    access_check_path,
    measure_access_check,
    page_features,
    require,
)

__all__ = [
    "NEEDS",
    "AccessCheckPath",
    "Feature",
    "FeatureMissing",
    "RealMemoryError",
    "TargetGone",
    "access_check_path",
    "as_dict",
    "detect",
    "kernel_damon",
    "require",
]


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _check_swap() -> Feature:
    text = _read("/proc/swaps") or ""
    devices = [line.split()[0] for line in text.splitlines()[1:] if line.strip()]
    if devices:
        return Feature("swap", True, f"active swap: {', '.join(devices)}")
    return Feature("swap", False, "no active swap (pageout of anonymous memory does nothing)", "")


def _check_thp() -> Feature:
    text = _read("/sys/kernel/mm/transparent_hugepage/enabled")
    if text is None:
        return Feature("thp", False, "transparent huge pages not built in", "")
    mode = text[text.find("[") + 1 : text.find("]")] if "[" in text else text.strip()
    return Feature("thp", mode != "never", f"transparent huge pages: {mode}")


def _check_psi() -> Feature:
    if _read("/proc/pressure/memory") is not None:
        return Feature("psi", True, "/proc/pressure/memory readable")
    return Feature(
        "psi", False, "/proc/pressure/memory unavailable", "kernel CONFIG_PSI=y (or psi=1)"
    )


def _check_cgroup2() -> Feature:
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return Feature("cgroup2", True, "cgroup v2 mounted at /sys/fs/cgroup")
    return Feature("cgroup2", False, "no cgroup v2 at /sys/fs/cgroup", "")


def _check_damon_sysfs() -> Feature:
    # Read-only: never write under this tree.
    path = "/sys/kernel/mm/damon/admin"
    if not os.path.isdir(path):
        return Feature("kernel_damon_sysfs", False, f"{path} missing", "")
    nr = _read(f"{path}/kdamonds/nr_kdamonds")
    return Feature(
        "kernel_damon_sysfs",
        True,
        f"{path} present ({(nr or '?').strip()} kdamonds configured)",
    )


def _check_c_helper() -> Feature:
    path = access_check_path()
    if path.name == "c":
        return Feature("c_helper", True, f"access checks in C: {path.why}")
    return Feature("c_helper", False, f"access checks in pure Python: {path.why}", path.fix)


def _check_root() -> Feature:
    if os.geteuid() == 0:
        return Feature("root", True, "running as root")
    return Feature("root", False, f"running as uid {os.geteuid()}", "run as root")


@cache
def detect() -> dict[str, Feature]:
    """All features, detected once per process."""
    checks = [
        _check_root(),
        *page_features().values(),
        _check_c_helper(),
        measure_access_check(),
        _check_swap(),
        _check_thp(),
        _check_psi(),
        _check_cgroup2(),
        _check_damon_sysfs(),
    ]
    return {f.name: f for f in checks}


def as_dict() -> dict[str, dict[str, object]]:
    return {name: asdict(f) for name, f in detect().items()}


def kernel_damon(root: str = DEFAULT_ROOT) -> KernelCapabilities | str:
    """What the kernel's DAMON at ``root`` offers, read-only (never staging a kdamond); a
    one-line reason instead where it cannot be read."""
    try:
        return probe(root)
    except (FeatureMissing, OSError) as err:
        return str(err)
