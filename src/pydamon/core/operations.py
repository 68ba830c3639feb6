"""The operations-set interface (the kernel's ``struct damon_operations``) and its registry.

As ``damon.h`` owns ``struct damon_operations`` and ``core.c`` selects an operations set by name
(``damon_select_ops()``), the core owns this interface: operations sets (:mod:`pydamon.ops`, the
kernel backend) implement it and register themselves by name; the CLI and the modules select them
with :func:`select_operations`.

The core calls these at fixed points of the monitoring loop:

- ``init`` once before the loop (set up targets' initial regions),
- ``update`` every ops-update interval (e.g. follow a process's mappings),
- ``prepare_access_checks`` before each sampling wait (pick sampling addresses, clear their
  accessed state), ``check_accesses`` after it (count accesses; return the highest nr_accesses),
- ``target_valid`` to know whether a target still exists,
- ``apply_scheme`` / ``get_scheme_score`` for DAMOS, ``cleanup`` when the loop ends.

An operations set knows nothing of scheme policy: it applies an action to an address range when
asked, and scores a region when asked. The scheme type is the operations set's type parameter
(``Operations[Scheme]``), so the core names no DAMOS type.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

if TYPE_CHECKING:
    from pydamon.core.clock import Clock
    from pydamon.core.context import Context, Target

#: The highest region priority score (``DAMOS_MAX_SCORE``): every region alike.
MAX_SCHEME_SCORE = 99

SchemeT = TypeVar("SchemeT", contravariant=True)


@dataclass
class ApplyResult:
    """What applying a scheme action to one region did."""

    #: Bytes the action was applied to (0 if it failed or was filtered out entirely).
    sz_applied: int = 0
    #: Bytes that passed the operations-layer filters.
    sz_ops_filter_passed: int = 0


class Operations(ABC, Generic[SchemeT]):
    """Base class of operations sets. Subclasses set :attr:`name`."""

    name: str = "base"

    def default_clock(self) -> Clock | None:
        """The clock a context uses with this operations set when none is given."""
        return None

    def default_cpu_budget(self) -> float | None:
        """The CPU budget (per cent of one CPU) of a context that sets none; None: no budget."""
        return None

    def init(self, ctx: Context) -> None:  # noqa: B027 - optional hook
        """Set up targets before monitoring starts."""

    def update(self, ctx: Context) -> None:  # noqa: B027 - optional hook
        """Update targets' regions (every ops-update interval)."""

    @abstractmethod
    def prepare_access_checks(self, ctx: Context) -> None:
        """Pick a sampling address per region and clear its accessed state."""

    @abstractmethod
    def check_accesses(self, ctx: Context) -> int:
        """Count accesses of the sampling addresses; return the highest nr_accesses."""

    def target_valid(self, ctx: Context, target: Target) -> bool:
        return True

    def apply_scheme(
        self, ctx: Context, target: Target, start: int, end: int, scheme: SchemeT
    ) -> ApplyResult:
        """Apply ``scheme``'s action to ``[start, end)`` of ``target``."""
        raise NotImplementedError(f"the {self.name} operations set cannot apply schemes")

    def get_scheme_score(
        self, ctx: Context, target: Target, region_index: int, scheme: SchemeT
    ) -> int:
        """Priority score (0..99) of a region for ``scheme`` under a quota.

        Without an override every region scores alike, as a kernel operations set without
        ``get_scheme_score`` leaves regions unprioritised.
        """
        return MAX_SCHEME_SCORE

    def cleanup(self, ctx: Context) -> None:  # noqa: B027 - optional hook
        """Release resources when the loop ends."""


def update_regions_access(ctx: Context, target: Target, accessed: np.ndarray) -> int:
    """Feed one sample's per-region accessed flags of ``target`` to the core.

    Returns the highest nr_accesses among the target's regions, for ``check_accesses``.
    """
    regions = target.regions
    regions.update_access_rate(accessed, ctx.attrs.max_nr_accesses)
    return int(regions.nr_accesses.max()) if len(regions) else 0


# -- the registry (damon_register_ops() / damon_select_ops()) -------------------------------------


class OperationsUnavailable(LookupError):
    """No operations set of that name is registered, or it cannot be loaded here."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class _Registration:
    name: str
    #: ``"package.module:ClassName"``, imported on first use (the real ops sets pull in numpy
    #: and ctypes helpers that light commands should not pay for), or the class itself.
    where: str | type[Operations[Any]]
    description: str


_registry: dict[str, _Registration] = {}


def register_operations(
    name: str, where: str | type[Operations[Any]], description: str = ""
) -> None:
    """Register an operations set under ``name`` (``damon_register_ops()``).

    ``where`` is the class or ``"module:Class"`` to import when it is first selected. A name
    registers once; registering it again with another class is an error.
    """
    old = _registry.get(name)
    if old is not None and old.where != where:
        raise ValueError(f"an operations set named {name!r} is registered already")
    _registry[name] = _Registration(name, where, description)


def operations_names() -> list[str]:
    """The names of the registered operations sets, in registration order."""
    return list(_registry)


def operations_description(name: str) -> str:
    return _lookup(name).description


def _lookup(name: str) -> _Registration:
    try:
        return _registry[name]
    except KeyError:
        known = ", ".join(_registry) or "none registered (import pydamon.ops)"
        raise OperationsUnavailable(f"no operations set named {name!r}; known: {known}") from None


def operations_class(name: str) -> type[Operations[Any]]:
    """The class of the operations set registered as ``name``."""
    reg = _lookup(name)
    if not isinstance(reg.where, str):
        return reg.where
    module_name, _, class_name = reg.where.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise OperationsUnavailable(
            f"the {name} operations set cannot be loaded in this pydamon build: {err}"
        ) from None
    return cls


def select_operations(name: str, **kwargs: Any) -> Operations[Any]:
    """An instance of the operations set registered as ``name`` (``damon_select_ops()``)."""
    return operations_class(name)(**kwargs)
