"""Operations sets: the address-space specific half of DAMON.

Each operations set implements :class:`pydamon.ops.base.Operations`. ``sim`` is a deterministic
simulated address space with ground truth; ``vaddr``, ``fvaddr`` and ``paddr`` watch real memory.
"""

from pydamon.ops.base import ApplyResult, Operations

__all__ = ["ApplyResult", "Operations"]
