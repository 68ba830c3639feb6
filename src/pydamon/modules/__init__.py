"""Modules: access-aware policies on top of DAMON/DAMOS, and the ready ones.

- :mod:`pydamon.modules.base`: the module API (:class:`Module`, :class:`Param`).
- :mod:`pydamon.modules.runner`: running a module, online reconfiguration, the background service.
- Ready modules: ``stat`` (DAMON_STAT), ``reclaim`` (DAMON_RECLAIM), ``lru_sort``
  (DAMON_LRU_SORT), ``thp`` (access-aware transparent huge pages).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys

from pydamon.modules.base import Module, ModuleError, Param, ParamError, Params

#: Built-in modules: name -> "python.module:ClassName".
BUILTIN_MODULES: dict[str, str] = {
    "stat": "pydamon.modules.stat:StatModule",
    "reclaim": "pydamon.modules.reclaim:ReclaimModule",
    "lru_sort": "pydamon.modules.lru_sort:LruSortModule",
    "thp": "pydamon.modules.thp:ThpModule",
}


def load_module(name_or_path: str) -> type[Module]:
    """The module class of a built-in name or of a user's Python file (``./mine.py``).

    A file defines one :class:`Module` subclass (or names it ``MODULE = MyModule``).
    """
    if name_or_path in BUILTIN_MODULES:
        modname, clsname = BUILTIN_MODULES[name_or_path].split(":")
        cls: type[Module] = getattr(importlib.import_module(modname), clsname)
        return cls
    if os.sep not in name_or_path and not name_or_path.endswith(".py"):
        known = ", ".join(BUILTIN_MODULES)
        raise ModuleError(
            f"unknown module {name_or_path!r}: use one of {known} or the path of a module file"
        )
    return _load_file(name_or_path)


def _load_file(path: str) -> type[Module]:
    if not os.path.isfile(path):
        raise ModuleError(f"module file {path} does not exist")
    modname = "pydamon_user_module_" + "".join(
        c if c.isalnum() else "_" for c in os.path.abspath(path)
    )
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        raise ModuleError(f"cannot load {path} as Python (name it *.py)")
    pymod = importlib.util.module_from_spec(spec)
    sys.modules[modname] = pymod
    try:
        spec.loader.exec_module(pymod)
    except SyntaxError as err:
        raise ModuleError(f"{path}:{err.lineno}: syntax error: {err.msg}") from None
    except Exception as err:
        line = _user_lineno(err, path)
        raise ModuleError(f"{path}{line}: {type(err).__name__}: {err}") from None
    chosen = getattr(pymod, "MODULE", None)
    if chosen is None:
        found = [
            obj
            for obj in vars(pymod).values()
            if inspect.isclass(obj) and issubclass(obj, Module) and obj.__module__ == modname
        ]
        if len(found) != 1:
            what = "no Module subclass" if not found else f"{len(found)} Module subclasses"
            raise ModuleError(f"{path} defines {what}; define one or set MODULE = YourModule")
        chosen = found[0]
    if not (inspect.isclass(chosen) and issubclass(chosen, Module)):
        raise ModuleError(f"{path}: MODULE must be a subclass of pydamon.modules.Module")
    if not chosen.name:
        chosen.name = os.path.splitext(os.path.basename(path))[0]
    return chosen


def _user_lineno(err: BaseException, path: str) -> str:
    tb = err.__traceback__
    line = ""
    real = os.path.realpath(path)
    while tb is not None:
        if os.path.realpath(tb.tb_frame.f_code.co_filename) == real:
            line = f":{tb.tb_lineno}"
        tb = tb.tb_next
    return line


__all__ = [
    "BUILTIN_MODULES",
    "Module",
    "ModuleError",
    "Param",
    "ParamError",
    "Params",
    "load_module",
]
