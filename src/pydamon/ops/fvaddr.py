"""Fixed virtual address ranges of processes (the kernel's ``fvaddr`` operations set).

The same access checks and actions as :mod:`pydamon.ops.vaddr`, on user-given ``ranges`` only:
``init`` takes them as they are and ``update`` never changes them.
"""

from pydamon.ops.vaddr import FvaddrOperations

__all__ = ["FvaddrOperations"]
