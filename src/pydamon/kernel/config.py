"""What a kdamond is given: its contexts, each an operations set, attrs, targets and schemes.

These are pydamon's own objects (:class:`~pydamon.core.Attrs`, :class:`~pydamon.core.Target`,
:class:`~pydamon.damos.Scheme`), so the same configuration runs on either backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydamon.core.attrs import Attrs
from pydamon.core.context import Target
from pydamon.damos.scheme import Scheme

#: Operations sets the kernel's sysfs names (``damon_sysfs_ops_strs``).
KERNEL_OPERATIONS = ("vaddr", "fvaddr", "paddr")


@dataclass
class ContextConfig:
    """One DAMON context of a kdamond (``kdamonds/<K>/contexts/<C>/``)."""

    ops: str = "vaddr"
    attrs: Attrs = field(default_factory=Attrs)
    targets: list[Target] = field(default_factory=list)
    schemes: list[Scheme] = field(default_factory=list)
