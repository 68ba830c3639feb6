"""The package's imports follow the layering rules of docs/design.md (the kernel's mm/damon).

Every import counts: at module level, inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

#: What each layer may import besides itself (``pydamon`` is the lazy facade package).
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "units": set(),
    "extras": set(),
    "damos": {"core", "units", "extras"},
    "ops": {"core", "damos", "units", "extras"},
    "kernel": {"core", "damos", "ops", "units", "runstate", "pydamon"},
    "record": {"core", "units", "pydamon", "extras"},
    "report": {"core", "record", "units", "extras"},
    "features": {"core", "ops", "kernel"},
    # chooses and builds the engine (user-space or kernel) of a configuration
    "backend": {"core", "damos", "ops", "kernel", "units", "runstate", "pydamon"},
    "runstate": set(),
    "workload": {"core", "ops", "units", "pydamon"},
    "modules": {
        "core",
        "damos",
        "ops",
        "kernel",
        "backend",
        "record",
        "units",
        "runstate",
        "pydamon",
        "extras",
    },
    "cli": {
        "core",
        "damos",
        "ops",
        "kernel",
        "backend",
        "record",
        "report",
        "modules",
        "features",
        "units",
        "runstate",
        "workload",
        "pydamon",
        "extras",
    },
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for a in node.names:
                # "from pydamon.ops import _proc" imports the module pydamon.ops._proc
                sub = f"{module}.{a.name}"
                found.append((node.lineno, sub if _is_module(sub) else module))
    return sorted({(line, m) for line, m in found if m == "pydamon" or m.startswith("pydamon.")})


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "pydamon"


def _is_module(module: str) -> bool:
    rel = Path(*module.split("."))
    return (SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file()


def violations() -> list[str]:
    bad = []
    for path in sorted((SRC / "pydamon").rglob("*.py")):
        me = _module_name(path)
        my_layer = _layer(me)
        for line, target in _imports(path):
            where = f"{path.relative_to(SRC)}:{line}: {me} imports {target}"
            layer = _layer(target)
            if my_layer == "pydamon" or layer == my_layer:
                pass
            elif layer not in ALLOWED.get(my_layer, set()):
                bad.append(f"{where} ({my_layer} may not import {layer})")
                continue
            # a private module (``_x``) is its package's own
            for i, part in enumerate(target.split(".")):
                if part.startswith("_") and not part.startswith("__"):
                    owner = ".".join(target.split(".")[:i])
                    if not (me == owner or me.startswith(owner + ".")):
                        bad.append(f"{where} (private to {owner})")
                    break
    return bad


#: Arrows still against the rules, each to be removed by the change that moves its code.
KNOWN: set[str] = set()


def test_imports_follow_the_layering() -> None:
    found = violations()
    assert [v for v in found if v not in KNOWN] == []
    assert KNOWN <= set(found), "a known violation is gone: remove it from KNOWN"


def test_the_checker_sees_a_wrong_arrow(tmp_path: Path, monkeypatch) -> None:
    # a core module that imports DAMOS, and an ops module that takes a cli private module
    fake = tmp_path / "pydamon"
    (fake / "core").mkdir(parents=True)
    (fake / "ops").mkdir()
    (fake / "cli").mkdir()
    for d in (fake, fake / "core", fake / "ops", fake / "cli"):
        (d / "__init__.py").write_text("")
    (fake / "cli" / "_util.py").write_text("")
    (fake / "core" / "loop.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pydamon.damos import x\n"
    )
    (fake / "ops" / "v.py").write_text("from pydamon.cli import _util\n")
    monkeypatch.setattr(__import__(__name__), "SRC", tmp_path)
    found = violations()
    assert any("core may not import damos" in v for v in found)
    assert any("ops may not import cli" in v for v in found)
    assert len(found) == 2
