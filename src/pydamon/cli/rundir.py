"""The run directory of background monitors (``pydamon start/stop/status/tune``).

Each instance has a directory ``<run dir>/<name>/`` with ``pid`` (the monitor's pid), ``info.json``
(what it monitors, where it records), ``status.json`` (refreshed every aggregation, atomically),
``latest.rec`` (the last aggregation's snapshots as a pydamon record, for ``report access``) and
``tune.json`` (a pending ``tune`` request, applied on SIGUSR1). The run directory is the
``monitors/`` subdirectory of :func:`pydamon.runstate.base_run_dir` (``$PYDAMON_RUN_DIR``, else
``/run/pydamon`` for root, else ``$XDG_RUNTIME_DIR/pydamon``, else ``/tmp/pydamon-<uid>``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

from pydamon.runstate import base_run_dir, pid_alive


def run_dir() -> str:
    return os.path.join(base_run_dir(), "monitors")


def instance_name(kind: str, detail: str) -> str:
    """A file-name-safe instance name, e.g. ``pid-1234``, ``paddr``, ``sim-hotcold``."""
    name = f"{kind}-{detail}" if detail else kind
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80]


def write_json_atomic(path: str, data: Any) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


@dataclass
class Instance:
    name: str
    path: str

    @property
    def pid(self) -> int | None:
        try:
            with open(os.path.join(self.path, "pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    @property
    def alive(self) -> bool:
        pid = self.pid
        return pid is not None and pid_alive(pid)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def status(self) -> dict[str, Any]:
        try:
            data = read_json(self.file("status.json"))
        except (OSError, ValueError):
            data = {}
        try:
            info = read_json(self.file("info.json"))
        except (OSError, ValueError):
            info = {}
        out = {"name": self.name, "pid": self.pid, "running": self.alive}
        out.update(info)
        out.update(data)
        out["running"] = self.alive
        return out


def instances() -> list[Instance]:
    base = run_dir()
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return []
    return [
        Instance(n, os.path.join(base, n)) for n in names if os.path.isdir(os.path.join(base, n))
    ]


def find_instance(name: str) -> Instance | None:
    for inst in instances():
        if inst.name == name:
            return inst
    return None
