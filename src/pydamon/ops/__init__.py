"""Operations sets: the address-space specific half of DAMON.

Each operations set implements the core's :class:`pydamon.core.Operations` and is registered here
by name (``damon_register_ops()``): ``vaddr``, ``fvaddr`` and ``paddr`` watch real memory; ``sim``
is a deterministic simulated address space with ground truth. Select one with
:func:`pydamon.core.select_operations`; importing this package registers them (each module is
imported only when its set is first selected).
"""

from pydamon.core.operations import register_operations

register_operations(
    "vaddr", "pydamon.ops.vaddr:VaddrOperations", "virtual address spaces of processes"
)
register_operations(
    "fvaddr",
    "pydamon.ops.vaddr:FvaddrOperations",
    "fixed virtual address ranges of processes (no mapping updates)",
)
register_operations("paddr", "pydamon.ops.paddr:PaddrOperations", "the physical address space")
register_operations(
    "sim", "pydamon.ops.sim:SimOperations", "a simulated address space with ground truth"
)
