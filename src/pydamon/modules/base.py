"""The module API: access-aware policies written in a few lines on top of DAMON/DAMOS.

A module is a subclass of :class:`Module` that declares typed :class:`Param` s (defaults, units,
validation), builds its monitoring context(s) and schemes from them, may react in callbacks, and
exposes its stats as a dict. :class:`pydamon.modules.runner.ModuleRunner` runs it and applies new
parameters online, inside the monitoring loop (the kernel modules' ``commit_inputs``).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from pydamon import units
from pydamon.core import Attrs, Context, Operations, Target
from pydamon.damos.scheme import Scheme
from pydamon.kernel.sysfs_common import DEFAULT_ROOT

#: Scheme fields that are inputs (the rest is run-time state the engine keeps).
_SCHEME_INPUTS = ("pattern", "apply_interval_us", "quota", "wmarks", "filters", "target_nid")


class ParamError(ValueError):
    """A module parameter that is unknown or has a bad value (one-line message)."""


class ModuleError(RuntimeError):
    """A module cannot be loaded, built or run (one-line message)."""


@dataclass(frozen=True)
class Param:
    """A typed module parameter.

    ``unit`` documents the value and lets text values carry suffixes (:mod:`pydamon.units`):
    ``us``/``ms`` accept ``120s``, ``100ms``, ``1d``...; ``bytes`` accepts ``4K``, ``128MiB``,
    ``4kb``...; ``permil``/``bp`` accept plain integers or percentages (``50%``).
    ``online=False`` parameters (what is monitored) cannot change while running.
    """

    name: str
    type: type
    default: Any
    help: str = ""
    unit: str = ""
    min: float | None = None
    max: float | None = None
    choices: Sequence[Any] | None = None
    optional: bool = False
    online: bool = True

    def parse(self, value: Any) -> Any:
        """Convert (from text if needed) and validate ``value``; raise :class:`ParamError`."""
        try:
            converted = self._convert(value)
        except (ValueError, TypeError) as err:
            raise ParamError(f"parameter {self.name}: {err}") from None
        if converted is None:
            return None
        if self.choices is not None and converted not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise ParamError(f"parameter {self.name}: {converted!r} is not one of {allowed}")
        unit = f" {self.unit}" if self.unit else ""
        if self.min is not None and converted < self.min:
            raise ParamError(f"parameter {self.name}: {converted}{unit} is below {self.min}{unit}")
        if self.max is not None and converted > self.max:
            raise ParamError(f"parameter {self.name}: {converted}{unit} is above {self.max}{unit}")
        return converted

    def _convert(self, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
            if self.optional:
                return None
            raise ValueError("a value is required")
        if self.type is bool:
            try:
                return units.parse_bool(value)
            except ValueError as err:
                raise ValueError(units.explain(value, err)) from None
        if self.type is int:
            if isinstance(value, bool):
                raise ValueError(f"{value!r} is not an integer")
            if isinstance(value, int):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            try:
                return self._parse_int(value)
            except ValueError as err:
                raise ValueError(units.explain(value, err)) from None
        if self.type is float:
            try:
                return units.parse_number(value, signed=True)
            except ValueError as err:
                raise ValueError(units.explain(value, err)) from None
        return self.type(value)

    def _parse_int(self, value: object) -> int:
        """An int in :mod:`pydamon.units`' grammar: ``120s``/``1d`` for ``us``/``ms``, ``4K`` for
        ``bytes``, ``50%`` for ``permil``/``bp`` (no ``min``/``max``: a parameter has bounds of
        its own)."""
        if self.unit in ("us", "ms"):
            return units.parse_duration(value, self.unit)
        if self.unit == "bytes":
            return units.parse_size(value)
        if self.unit == "permil":
            return units.parse_permil(value)
        if self.unit == "bp":
            return units.parse_bp(value)
        return units.parse_count(value, "an integer", signed=True)

    def describe(self) -> str:
        unit = f" [{self.unit}]" if self.unit else ""
        online = "" if self.online else " (fixed while running)"
        return f"{self.name}={self.default!r}{unit}: {self.help}{online}"


class Params:
    """Validated parameter values; read them as attributes (``p.min_age``)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(f"no parameter {name!r}") from None

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    def __repr__(self) -> str:
        return f"Params({self._values!r})"


class Module:
    """Base class of modules. Subclasses set :attr:`name`, :attr:`params` and build contexts.

    Either override :meth:`build` (full control), or the three parts the default :meth:`build`
    and :meth:`commit` use: :meth:`make_targets`, :meth:`make_attrs`, :meth:`make_schemes`.
    Callbacks :meth:`after_aggregation` / :meth:`after_wmarks_check` run in the monitoring loop
    (return a true value to stop it); :meth:`stats` must be cheap and safe from other threads,
    so compute stats in the callbacks and return a copy.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params: ClassVar[Sequence[Param]] = ()
    #: How often ``pydamon module run`` prints the stats (seconds of wall time).
    report_interval_s: ClassVar[float] = 5.0

    def __init__(
        self, *, backend: str = "user", damon_root: str = DEFAULT_ROOT, **values: Any
    ) -> None:
        self.p = self.parse_params(values)
        self.contexts: list[Context] = []
        #: ``user`` (pydamon's engine, the default), ``kernel`` (a pydamon-owned kdamond,
        #: never the kernel modules' parameters) or ``auto``; what ran, and why, after build().
        self.backend = backend
        self.damon_root = damon_root
        self.backend_used = ""
        self.backend_reason = ""

    # -- parameters --------------------------------------------------------------------------
    @classmethod
    def param(cls, name: str) -> Param:
        for p in cls.params:
            if p.name == name:
                return p
        names = [p.name for p in cls.params]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(names) or 'none'}"
        raise ParamError(f"{cls.name or cls.__name__} has no parameter {name!r} ({hint})")

    @classmethod
    def parse_params(cls, values: Mapping[str, Any], base: Params | None = None) -> Params:
        """Validate ``values`` over ``base`` (or the defaults); raise :class:`ParamError`."""
        merged: dict[str, Any] = (
            base.as_dict() if base is not None else {p.name: p.default for p in cls.params}
        )
        for key, value in values.items():
            merged[key.replace("-", "_")] = cls.param(key.replace("-", "_")).parse(value)
        params = Params(merged)
        try:
            cls.check_params(params)
        except ParamError:
            raise
        except ValueError as err:  # e.g. AttrsError, SchemeError: still the user's values
            raise ParamError(str(err)) from None
        return params

    @classmethod
    def check_params(cls, p: Params) -> None:
        """Rules across parameters (e.g. watermarks order); raise :class:`ParamError`."""

    # -- building ----------------------------------------------------------------------------
    def make_targets(self) -> tuple[Operations[Any], list[Target]]:
        """The operations set and targets to monitor."""
        raise NotImplementedError(f"module {self.name} does not define make_targets()")

    def make_attrs(self) -> Attrs:
        return Attrs()

    def make_schemes(self) -> list[Scheme]:
        return []

    def build(self) -> list[Context]:
        """Create the monitoring context(s) from the parameters."""
        ops, targets = self.make_targets()
        # The module's seed (where it has one) also seeds the loop's randomness (sampling
        # addresses, region splits): without it a seeded simulation is not reproducible.
        seed = self.p.as_dict().get("seed")
        if self.backend == "user":
            self.backend_used, self.backend_reason = "user", "user-space engine, as asked"
            return [
                Context(ops, targets, self.make_attrs(), schemes=self.make_schemes(), seed=seed)
            ]
        from pydamon.backend import make_context

        ctx, self.backend_used, self.backend_reason = make_context(
            self.backend,
            str(getattr(ops, "name", "")),
            targets,
            self.make_attrs(),
            self.make_schemes(),
            damon_root=self.damon_root,
            user_ops=ops,
            seed=seed,
        )
        return [ctx]  # type: ignore[list-item]  # the kernel's has the same API

    def commit(self, ctx: Context, old: Params) -> None:
        """Apply ``self.p`` (just changed from ``old``) to ``ctx``, inside its monitoring loop.

        Monitoring results are kept: attributes change through ``set_attrs`` (which rescales
        nr_accesses and age) and regions stay as they are.
        """
        attrs = self.make_attrs().with_aggr_samples()
        if attrs != ctx.attrs:
            ctx.set_attrs(attrs)
        schemes = self.make_schemes()
        if len(schemes) == len(ctx.schemes) and all(
            getattr(a, "action", None) == getattr(b, "action", None)
            for a, b in zip(schemes, ctx.schemes)
        ):
            # Like the kernel's damos_commit(): update the installed schemes in place so that
            # their stats and quota charging survive the change.
            for installed, new in zip(ctx.schemes, schemes):
                for name in _SCHEME_INPUTS:
                    if hasattr(new, name):
                        setattr(installed, name, getattr(new, name))
            if ctx.schemes_runner is not None:
                ctx.schemes_runner.attrs_changed(ctx)
            commit_schemes = getattr(ctx, "commit_schemes", None)  # the kernel backend's
            if commit_schemes is not None:
                commit_schemes()
        elif schemes or ctx.schemes:
            ctx.set_schemes(schemes)

    # -- callbacks and stats -------------------------------------------------------------------
    def after_aggregation(self, ctx: Context) -> None:
        return None

    def after_wmarks_check(self, ctx: Context) -> None:
        return None

    def stats(self) -> dict[str, Any]:
        return {}

    @classmethod
    def format_stats(cls, stats: Mapping[str, Any]) -> str:
        """Human-readable stats for ``pydamon module run`` / ``status``."""
        return "\n".join(f"{k}: {v}" for k, v in stats.items())

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the module holds (servers, files) after its contexts stopped."""
