"""Running modules: in this process, online reconfiguration, and the background service.

:class:`ModuleRunner` builds a module's contexts, hooks its callbacks, runs the loops in
background threads and applies new parameters inside each loop with ``Context.call`` (the
kernel modules' ``commit_inputs``: parameters change, monitoring results stay).

:class:`ServiceFiles` is the run directory protocol of ``pydamon module start/stop/status/set``:
``<instance>.pid``, ``<instance>.status.json`` (written by the running module about once a
second), ``<instance>.cmd.json`` (new parameters, written atomically by ``set``) and
``<instance>.ack.json`` (the running module's answer to a command).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydamon.core import Context
from pydamon.core.budget import achieved
from pydamon.modules.base import Module, ModuleError, ParamError, Params
from pydamon.runstate import base_run_dir, pid_alive


class ModuleRunner:
    """Run one module's contexts in background threads; reconfigure them online."""

    def __init__(
        self,
        module: Module,
        *,
        duration_s: float | None = None,
        ref: str | None = None,
        cpu_budget: float | None = None,
    ) -> None:
        self.module = module
        #: the contexts' CPU budget (per cent of one CPU, 0: none); None keeps their default
        self.cpu_budget = cpu_budget
        #: How the module was named when loaded (built-in name or file path), for ``set``.
        self.ref = ref or module.name
        self.duration_s = duration_s
        self.contexts: list[Context] = []
        self.started_at = 0.0
        self._lock = threading.Lock()

    def start(self) -> None:
        contexts = self.module.build()
        if not contexts:
            raise ModuleError(f"module {self.module.name} built no monitoring context")
        self.module.contexts = contexts
        self.contexts = contexts
        for ctx in contexts:
            if self.cpu_budget is not None:
                ctx.set_cpu_budget(self.cpu_budget)
            ctx.add_callback("after_aggregation", self.module.after_aggregation)
            ctx.add_callback("after_wmarks_check", self.module.after_wmarks_check)
            if self.duration_s is not None:
                ctx.add_callback("after_aggregation", _stop_after(ctx, self.duration_s))
                ctx.add_callback("after_wmarks_check", _stop_after(ctx, self.duration_s))
        self.started_at = time.time()
        for ctx in contexts:
            ctx.start()

    @property
    def running(self) -> bool:
        return any(ctx.is_running for ctx in self.contexts)

    def stop(self) -> None:
        for ctx in self.contexts:
            ctx.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for every loop to end (re-raising what ended one); True if all ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for ctx in self.contexts:
            left = None if deadline is None else max(deadline - time.monotonic(), 0)
            if not ctx.wait(left):
                return False
        return True

    def close(self) -> None:
        self.stop()
        try:
            self.wait(10)
        finally:
            self.module.close()

    def set_params(self, values: Mapping[str, Any]) -> Params:
        """Validate ``values`` over the current parameters and apply them inside the loops.

        Returns the new parameters; raises :class:`ParamError` (nothing changes) if invalid.
        """
        with self._lock:
            module = self.module
            old = module.p
            new = type(module).parse_params(values, base=old)
            for name, value in new.as_dict().items():
                param = type(module).param(name)
                if not param.online and value != getattr(old, name):
                    raise ParamError(
                        f"parameter {name} cannot change while {module.name} runs; "
                        f"restart the module to change it"
                    )
            module.p = new
            try:
                for ctx in self.contexts:
                    ctx.call(lambda c: module.commit(c, old))
            except Exception:
                module.p = old
                raise
            return new

    def status(self) -> dict[str, Any]:
        contexts = []
        for ctx in self.contexts:
            attrs = ctx.attrs
            contexts.append(
                {
                    "ops": getattr(ctx.ops, "name", ctx.ops),  # the kernel's: its name
                    "running": ctx.is_running,
                    "nr_targets": len(ctx.targets),
                    "nr_regions": ctx.nr_regions,
                    "nr_aggregations": ctx.nr_aggregations,
                    "sample_interval_us": attrs.sample_interval_us,
                    "aggr_interval_us": attrs.aggr_interval_us,
                    "monitor_cpu_s": round(ctx.monitor_cpu_s, 3),
                    "achieved": achieved(ctx),
                }
            )
        return {
            "module": self.module.name,
            "ref": self.ref,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "updated_at": time.time(),
            "running": self.running,
            "params": _jsonable(self.module.p.as_dict()),
            "stats": _jsonable(self.module.stats()),
            "contexts": contexts,
            "backend": self.module.backend_used,
            "backend_reason": self.module.backend_reason,
        }


def _stop_after(ctx: Context, duration_s: float) -> Callable[[Context], None]:
    start_us = ctx.clock.now_us()
    limit_us = int(duration_s * 1e6)

    def check(c: Context) -> None:
        if c.clock.now_us() - start_us >= limit_us:
            c.stop()

    return check


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


# -- the run directory -----------------------------------------------------------------------------
def default_run_dir() -> Path:
    """The ``modules/`` subdirectory of :func:`pydamon.runstate.base_run_dir`."""
    return Path(base_run_dir()) / "modules"


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError:
        return None


@dataclass
class ServiceFiles:
    """Files of one module instance in the run directory."""

    run_dir: Path
    instance: str

    def __post_init__(self) -> None:
        if not self.instance or "/" in self.instance or self.instance.startswith("."):
            raise ModuleError(f"bad instance name {self.instance!r}: use letters, digits, _ or -")

    def path(self, suffix: str) -> Path:
        return self.run_dir / f"{self.instance}.{suffix}"

    @property
    def pid_file(self) -> Path:
        return self.path("pid")

    @property
    def log_file(self) -> Path:
        return self.path("log")

    def running_pid(self) -> int | None:
        """The pid of the running instance, or None (stale pid files are ignored)."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid) else None

    # -- the running module's side --------------------------------------------------------------
    def claim(self) -> None:
        """Create the pid file; refuse if another live process holds it."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ModuleError(
                f"cannot create run directory {self.run_dir}: {err.strerror}; "
                "set PYDAMON_RUN_DIR or --run-dir to a writable directory"
            ) from None
        pid = self.running_pid()
        if pid is not None and pid != os.getpid():
            raise ModuleError(
                f"module instance {self.instance} already runs (pid {pid}); stop it with "
                f"'pydamon module stop {self.instance}' or pick another --instance"
            )
        for suffix in ("cmd.json", "ack.json"):
            self.path(suffix).unlink(missing_ok=True)
        self.pid_file.write_text(f"{os.getpid()}\n")

    def release(self) -> None:
        try:
            if self.running_pid() in (None, os.getpid()):
                self.pid_file.unlink(missing_ok=True)
        except OSError:
            pass

    def write_status(self, status: Mapping[str, Any]) -> None:
        _write_json_atomic(self.path("status.json"), dict(status, instance=self.instance))

    def poll_command(self, last_seq: int) -> dict[str, Any] | None:
        cmd = _read_json(self.path("cmd.json"))
        if isinstance(cmd, dict) and int(cmd.get("seq", 0)) > last_seq:
            return cmd
        return None

    def ack(self, seq: int, error: str | None, params: Mapping[str, Any]) -> None:
        _write_json_atomic(
            self.path("ack.json"),
            {"seq": seq, "ok": error is None, "error": error, "params": _jsonable(dict(params))},
        )

    # -- the controller's side ------------------------------------------------------------------
    def read_status(self) -> dict[str, Any] | None:
        data = _read_json(self.path("status.json"))
        return data if isinstance(data, dict) else None

    def send_params(self, params: Mapping[str, Any], timeout_s: float = 15.0) -> dict[str, Any]:
        """Deliver new parameters to the running instance and wait for its answer."""
        if self.running_pid() is None:
            raise ModuleError(f"module instance {self.instance} is not running")
        seq = time.time_ns()
        _write_json_atomic(self.path("cmd.json"), {"seq": seq, "params": dict(params)})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ack = _read_json(self.path("ack.json"))
            if isinstance(ack, dict) and ack.get("seq") == seq:
                return ack
            if self.running_pid() is None:
                raise ModuleError(f"module instance {self.instance} exited before applying")
            time.sleep(0.05)
        raise ModuleError(
            f"module instance {self.instance} did not answer within {timeout_s:.0f} s; "
            f"see {self.log_file}"
        )

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM the running instance and wait for it to exit; returns its pid."""
        pid = self.running_pid()
        if pid is None:
            raise ModuleError(f"module instance {self.instance} is not running")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                self.pid_file.unlink(missing_ok=True)
                return pid
            time.sleep(0.05)
        raise ModuleError(f"module instance {self.instance} (pid {pid}) did not stop in time")


def serve(
    runner: ModuleRunner,
    files: ServiceFiles,
    *,
    on_report: Callable[[dict[str, Any]], None] | None = None,
    report_interval_s: float = 5.0,
    poll_interval_s: float = 0.1,
) -> None:
    """Run a started module until its loops end or SIGINT/SIGTERM: write status, take commands.

    Must be called from the main thread (it installs the signal handlers).
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    last_seq = 0
    next_status = 0.0
    next_report = time.monotonic() + report_interval_s
    try:
        while not stop.is_set() and runner.running:
            cmd = files.poll_command(last_seq)
            if cmd is not None:
                last_seq = int(cmd["seq"])
                try:
                    new = runner.set_params(cmd.get("params") or {})
                    files.ack(last_seq, None, new.as_dict())
                except (ParamError, ValueError, ModuleError) as err:
                    files.ack(last_seq, str(err), runner.module.p.as_dict())
                next_status = 0.0
            now = time.monotonic()
            if now >= next_status:
                files.write_status(runner.status())
                next_status = now + 1.0
            if on_report is not None and report_interval_s > 0 and now >= next_report:
                on_report(runner.status())
                next_report = now + report_interval_s
            stop.wait(poll_interval_s)
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
        runner.stop()
        try:
            runner.wait(30)
        finally:
            status = runner.status()
            files.write_status(status)
            runner.module.close()
            if on_report is not None:
                on_report(status)
