"""The kernel backend: drive the in-kernel DAMON through its sysfs interface.

Mirrors the kernel's split: :mod:`.sysfs` (kdamonds, contexts, targets), :mod:`.sysfs_schemes`
(DAMOS schemes), :mod:`.sysfs_common` (file access and errors); :mod:`.capabilities` probes what
the running kernel's DAMON offers from the files it exposes. :class:`KernelContext` runs a
monitoring context on a kdamond of its own with :class:`pydamon.core.Context`'s API, its results
from the ``damon_aggregated`` tracepoint (:mod:`.tracefs`) or a stat scheme's tried regions.
"""

from pydamon.kernel.capabilities import KernelCapabilities, missing_features, probe, require
from pydamon.kernel.config import ContextConfig
from pydamon.kernel.context import KernelContext
from pydamon.kernel.sysfs import DamonSysfs, KdamondStatus, KernelConfigError, TunedIntervals
from pydamon.kernel.sysfs_common import (
    DEFAULT_ROOT,
    KdamondNotOwned,
    KernelFeatureMissing,
    KernelPrivilegeMissing,
    KernelSysfsError,
    Sysfs,
    SysfsIO,
)
from pydamon.kernel.tracefs import TracefsUnavailable

__all__ = [
    "DEFAULT_ROOT",
    "ContextConfig",
    "DamonSysfs",
    "KdamondNotOwned",
    "KdamondStatus",
    "KernelCapabilities",
    "KernelConfigError",
    "KernelContext",
    "KernelFeatureMissing",
    "KernelPrivilegeMissing",
    "KernelSysfsError",
    "Sysfs",
    "SysfsIO",
    "TracefsUnavailable",
    "TunedIntervals",
    "missing_features",
    "probe",
    "require",
]
