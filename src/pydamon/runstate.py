"""Run-time state shared by the CLI's background monitors and the modules' services."""

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


def kdamond_pool_path() -> str:
    """The record of pydamon's own kdamonds (:mod:`pydamon.kernel.pool`); absent when it has none,
    so that ``status`` knows without importing the kernel backend."""
    return os.path.join(base_run_dir(), "kdamonds.json")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False  # it exited between the two checks
