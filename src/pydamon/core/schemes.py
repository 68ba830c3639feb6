"""The schemes-runner interface: what the core needs from DAMOS, and how DAMOS attaches itself.

The core drives the timing only (``kdamond_fn``'s calls); all scheme policy lives behind
:class:`SchemesRunner`. :mod:`pydamon.damos` registers its engine here when imported, so the core
names no DAMOS type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pydamon.core.context import Context


class SchemesRunner(Protocol):
    """What the core needs from DAMOS (implemented by :mod:`pydamon.damos`).

    The core only drives the timing; all scheme policy lives behind this interface.
    """

    def init(self, ctx: Context) -> None:
        """At loop start: set each scheme's next apply time, default filter behaviour."""

    def wmark_wait_us(self, ctx: Context) -> int:
        """Check watermarks; 0 if any scheme is active, else how long to wait (µs)."""
        ...

    def apply(self, ctx: Context) -> None:
        """``kdamond_apply_schemes()``: apply every due scheme to every region."""

    def attrs_changed(self, ctx: Context) -> None:
        """Monitoring attributes changed: recompute the schemes' next apply times."""


#: Builds a context's schemes runner (``register_schemes_runner``).
_schemes_runner_factory: Callable[[], SchemesRunner] | None = None


def register_schemes_runner(factory: Callable[[], SchemesRunner]) -> None:
    """Make ``factory`` build the runner of contexts given schemes (DAMOS attaches itself)."""
    global _schemes_runner_factory
    _schemes_runner_factory = factory


def new_schemes_runner() -> SchemesRunner:
    if _schemes_runner_factory is None:
        raise RuntimeError("no schemes runner registered: import pydamon.damos first")
    return _schemes_runner_factory()
