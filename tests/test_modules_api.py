"""The module API: user module files load, parameters validate, modules run and are
reconfigured online (through the public API and the ``pydamon module`` CLI)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pydamon.modules import ModuleError, ParamError, load_module
from pydamon.modules.runner import ModuleRunner

ROOT = Path(__file__).resolve().parents[1]
MAIN = "import sys; from pydamon.cli.main import main; sys.exit(main(sys.argv[1:]))"

#: A user's module with an operations set of its own: 64 MiB in 16 regions whose first 16 MiB
#: is accessed at every sample, the rest never, on a virtual clock.
USER_MODULE = """
from pydamon.core import Attrs, Regions, Target, VirtualClock
from pydamon.modules import Module, Param, ParamError
from pydamon.core.operations import Operations, update_regions_access

MiB = 1 << 20


class HotColdOps(Operations):
    name = "hotcold-user"

    def default_clock(self):
        return VirtualClock()

    def init(self, ctx):
        for t in ctx.targets:
            t.regions = Regions([(i * 4 * MiB, (i + 1) * 4 * MiB) for i in range(16)])

    def prepare_access_checks(self, ctx):
        for t in ctx.targets:
            t.regions.pick_sampling_addrs(ctx.rng)

    def check_accesses(self, ctx):
        top = 0
        for t in ctx.targets:
            top = max(top, update_regions_access(ctx, t, t.regions.sampling_addr < 16 * MiB))
        return top


class HotBytes(Module):
    name = "hotbytes"
    params = (
        Param("aggr_interval", int, 100_000, "aggregation interval", unit="us", min=1000),
        Param("max_nr_regions", int, 100, "max regions", min=3),
        Param("label", str, "x", "a label", choices=("x", "y")),
    )
    report_interval_s = 0.2

    @classmethod
    def check_params(cls, p):
        if p.max_nr_regions < 10:
            raise ParamError("max_nr_regions must be at least 10 (min_nr_regions)")

    def make_targets(self):
        return HotColdOps(), [Target()]

    def make_attrs(self):
        aggr = self.p.aggr_interval
        return Attrs(sample_interval_us=aggr // 20, aggr_interval_us=aggr,
                     max_nr_regions=self.p.max_nr_regions)

    def after_aggregation(self, ctx):
        snap = ctx.snapshot(0)
        hot = snap.nr_accesses >= snap.max_nr_accesses // 2
        self.last = {"hot_bytes": int(snap.sizes[hot].sum()),
                     "max_age": int(snap.age.max()),
                     "aggregations": ctx.nr_aggregations}

    def stats(self):
        return dict(getattr(self, "last", {}))
"""


def docs_example() -> str:
    text = (ROOT / "docs" / "modules.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S)
    assert block, "docs/modules.md has no python example"
    return block.group(1)


@pytest.fixture
def user_module(tmp_path: Path) -> Path:
    path = tmp_path / "hotbytes.py"
    path.write_text(USER_MODULE)
    return path


def pydamon(*args: str, env_extra: dict[str, str] | None = None, timeout: float = 60):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-c", MAIN, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_docs_example_is_short_and_loads(tmp_path: Path) -> None:
    code = docs_example()
    assert len(code.strip().splitlines()) < 40
    path = tmp_path / "coldmem.py"
    path.write_text(code)
    cls = load_module(str(path))
    assert cls.name == "coldmem"
    module = cls(min_age="2s", ops="sim")
    assert module.p.min_age == 2_000_000
    with pytest.raises(ParamError, match="parameter min_age"):
        cls(min_age="soon")
    with pytest.raises(ParamError, match="need --ops vaddr"):
        cls(pid=1)


def test_user_module_loads_and_validates(user_module: Path) -> None:
    cls = load_module(str(user_module))
    assert cls.name == "hotbytes"
    assert cls(aggr_interval="200ms").p.aggr_interval == 200_000
    for bad, message in (
        ({"aggr_interval": "10"}, "parameter aggr_interval: 10 us is below 1000 us"),
        ({"aggr_interval": "fast"}, "parameter aggr_interval: 'fast' is not a duration"),
        ({"label": "z"}, "parameter label: 'z' is not one of x, y"),
        ({"max_nr_regions": "5"}, "max_nr_regions must be at least 10"),
        ({"nope": "1"}, "hotbytes has no parameter 'nope' \\(known: aggr_interval"),
    ):
        with pytest.raises(ParamError, match=message):
            cls(**bad)


def test_bad_module_files(tmp_path: Path) -> None:
    with pytest.raises(ModuleError, match="does not exist"):
        load_module(str(tmp_path / "missing.py"))
    bad = tmp_path / "broken.py"
    bad.write_text("class X(:\n")
    with pytest.raises(ModuleError, match=r"broken.py:1: syntax error"):
        load_module(str(bad))
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ModuleError, match="defines no Module subclass"):
        load_module(str(empty))
    with pytest.raises(ModuleError, match="unknown module 'nosuch'"):
        load_module("nosuch")


def test_runs_and_reconfigures_online_keeping_results(user_module: Path) -> None:
    cls = load_module(str(user_module))
    module = cls()
    runner = ModuleRunner(module)
    runner.start()
    try:
        ctx = runner.contexts[0]
        deadline = time.monotonic() + 20
        while ctx.nr_aggregations < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        before = module.stats()
        assert before["hot_bytes"] >= 12 << 20
        assert before["max_age"] >= 10
        runner.set_params({"aggr_interval": "200ms"})
        # Applied inside the loop: the attributes changed at once, results were kept
        # (ages rescaled by 100 ms / 200 ms, not reset; hot regions still hot).
        assert ctx.attrs.aggr_interval_us == 200_000
        assert ctx.attrs.sample_interval_us == 10_000
        aggregations = ctx.nr_aggregations
        while ctx.nr_aggregations < aggregations + 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        after = module.stats()
        assert after["aggregations"] > before["aggregations"]
        assert after["max_age"] >= before["max_age"] // 2 - 1
        assert after["hot_bytes"] >= 12 << 20
        with pytest.raises(ParamError, match="below 1000 us"):
            runner.set_params({"aggr_interval": "1us"})
        assert module.p.aggr_interval == 200_000
    finally:
        runner.close()
    assert not runner.running


def test_cli_run_foreground_json(user_module: Path, tmp_path: Path) -> None:
    r = pydamon(
        "module",
        "run",
        str(user_module),
        "--duration",
        "3",
        "--format",
        "json",
        "--aggr-interval",
        "50ms",
        "--run-dir",
        str(tmp_path / "run"),
    )
    assert r.returncode == 0, r.stderr
    last = json.loads(r.stdout.strip().splitlines()[-1])
    assert last["params"]["aggr_interval"] == 50_000
    assert last["stats"]["hot_bytes"] >= 12 << 20
    assert not (tmp_path / "run" / "hotbytes.pid").exists()


def test_cli_errors_are_one_line(user_module: Path, tmp_path: Path) -> None:
    for args, message in (
        (("run", str(user_module), "--aggr-interval", "0"), "below 1000 us"),
        (("run", str(user_module), "--bogus", "1"), "no parameter 'bogus'"),
        (("run", str(tmp_path / "nope.py")), "does not exist"),
        (("run", "nosuch"), "unknown module"),
        (("stop", "hotbytes", "--run-dir", str(tmp_path)), "is not running"),
        (("set", "hotbytes", "--label", "y", "--run-dir", str(tmp_path)), "is not running"),
    ):
        r = pydamon("module", *args)
        assert r.returncode != 0
        assert message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr


def test_cli_service_start_status_set_stop(user_module: Path, tmp_path: Path) -> None:
    run_dir = str(tmp_path / "run")
    env = {"PYDAMON_RUN_DIR": run_dir}
    r = pydamon("module", "start", str(user_module), "--aggr-interval", "100ms", env_extra=env)
    assert r.returncode == 0, r.stderr
    assert "started hotbytes" in r.stdout
    try:
        r = pydamon("module", "start", str(user_module), env_extra=env)
        assert r.returncode != 0 and "already runs" in r.stderr
        deadline = time.monotonic() + 20
        status: dict = {}
        while time.monotonic() < deadline:
            r = pydamon("module", "status", "hotbytes", "--json", env_extra=env)
            assert r.returncode == 0, r.stderr
            status = json.loads(r.stdout)
            if status["stats"].get("aggregations", 0) >= 20:
                break
            time.sleep(0.3)
        assert status["stats"]["hot_bytes"] >= 12 << 20
        r = pydamon("module", "set", "hotbytes", "--aggr-interval", "5", env_extra=env)
        assert r.returncode == 2 and "below 1000 us" in r.stderr
        r = pydamon("module", "set", "hotbytes", "--aggr-interval", "200ms", env_extra=env)
        assert r.returncode == 0, r.stderr
        assert "applied aggr_interval=200000" in r.stdout
        r = pydamon("module", "status", "hotbytes", "--json", env_extra=env)
        status = json.loads(r.stdout)
        assert status["params"]["aggr_interval"] == 200_000
        r = pydamon("module", "status", env_extra=env)
        assert "hotbytes: module" in r.stdout and "aggr_interval=200000" in r.stdout
    finally:
        r = pydamon("module", "stop", "hotbytes", env_extra=env)
    assert r.returncode == 0, r.stderr
    assert "stopped hotbytes" in r.stdout
    r = pydamon("module", "status", env_extra=env)
    assert "no module instance runs" in r.stdout


def test_docs_example_runs_on_the_sim(tmp_path: Path) -> None:
    path = tmp_path / "coldmem.py"
    path.write_text(docs_example())
    module = load_module(str(path))(ops="sim", workload="hotcold", seed=2, min_age="5s")
    runner = ModuleRunner(module, duration_s=20)
    runner.start()
    assert runner.wait(60)
    runner.close()
    stats = module.stats()
    # hotcold's cold area is 60% of its bytes and is never accessed
    assert 0.5 <= stats["cold_bytes"] / stats["total_bytes"] <= 0.7


def test_systemd_unit_command_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    unit = (ROOT / "contrib" / "systemd" / "pydamon-module@.service").read_text()
    (exec_start,) = [ln for ln in unit.splitlines() if ln.startswith("ExecStart=")]
    words = exec_start[len("ExecStart=") :].split()
    assert words[0].endswith("/pydamon") and words[1:3] == ["module", "run"]
    run_dir = tmp_path / "run"
    args: list[str] = []
    for word in words[1:]:
        word = word.replace("${PYDAMON_MODULE}", "stat").replace("%i", "stat")
        if word == "$PYDAMON_MODULE_ARGS":
            args += ["--ops", "sim"]
        elif word == "/run/pydamon/modules":
            args.append(str(run_dir))
        else:
            args.append(word)
    proc = subprocess.Popen(
        [sys.executable, "-c", MAIN, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    status_file = run_dir / "stat.status.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not status_file.exists():
        time.sleep(0.1)
    assert status_file.exists(), proc.stderr.read() if proc.poll() is not None else "no status"
    assert json.loads(status_file.read_text())["pid"] == proc.pid
    proc.send_signal(15)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    final = json.loads(status_file.read_text())
    assert final["running"] is False
    assert not (run_dir / "stat.pid").exists()
    assert "estimated_memory_bandwidth" in out  # the last report on the way out
