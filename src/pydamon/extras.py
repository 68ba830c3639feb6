"""How to install an optional Python package pydamon needs for one job (YAML, plots, Parquet).

``pip install 'pydamon[plot]'`` only works where pip can find pydamon in a package index: from a
source checkout or a wheel file it fails. :func:`install_hint` names the command that works where
this pydamon came from. A missing optional package is an environment problem, not a kernel
feature: the CLI exits 1 for it (3 is for kernel features and privileges).
"""

from __future__ import annotations

import importlib.metadata
import json


def install_hint(package: str, extra: str) -> str:
    """``pip install 'pydamon[extra]'`` for pydamon installed from an index, else
    ``pip install package`` (and the checkout's ``pip install '.[extra]'`` when known)."""
    try:
        dist = importlib.metadata.distribution("pydamon")
    except importlib.metadata.PackageNotFoundError:
        return f"pip install {package}"  # run from a source tree on the path
    try:
        origin = json.loads(dist.read_text("direct_url.json") or "null")
    except ValueError:
        origin = None
    if not isinstance(origin, dict):
        return f"pip install 'pydamon[{extra}]'"
    url = str(origin.get("url", ""))
    dir_info = origin.get("dir_info")
    if isinstance(dir_info, dict) and url.startswith("file://"):
        editable = "-e " if dir_info.get("editable") else ""
        checkout = url[len("file://") :]
        return f"pip install {package} (or pip install {editable}'{checkout}[{extra}]')"
    return f"pip install {package}"
