"""Well-known paths shared by the CLI's background monitors and the modules' services."""

from __future__ import annotations

import os


def base_run_dir() -> str:
    """Root of pydamon's run-time state: ``$PYDAMON_RUN_DIR``, else ``/run/pydamon`` as root, else
    ``$XDG_RUNTIME_DIR/pydamon``, else ``/tmp/pydamon-UID``.

    Background monitors live in its ``monitors/`` and module services in its ``modules/``
    subdirectory, so neither mistakes the other's state for its own.
    """
    env = os.environ.get("PYDAMON_RUN_DIR")
    if env:
        return env
    if os.geteuid() == 0:
        return "/run/pydamon"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "pydamon")
    return f"/tmp/pydamon-{os.getuid()}"
