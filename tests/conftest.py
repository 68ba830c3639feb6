"""Test-suite machinery: running ``@pytest.mark.guest`` tests where page_idle exists.

Tests marked ``guest`` need a kernel with the page_idle bitmap (and usually root). They run:

- natively, when this machine's ``/sys/kernel/mm/page_idle/bitmap`` is readable and writable
  (or when this process already runs inside the test guest, ``PYDAMON_IN_GUEST=1``);
- otherwise inside ONE boot of the qemu test guest (``../shared/testbed``, or
  ``$PYDAMON_TESTBED``) for the whole session: the first guest test boots the guest, which runs
  all selected guest tests in an inner pytest; each guest test on the host then reports its inner
  outcome (pass, failure text, skip reason);
- or they skip, saying what is missing.

Guest tests that change the system (swap through the ``zram_swap`` fixture, cgroups, kernel
DAMON, damo; marked ``changes_system``) never run natively outside the guest, even where this
machine has page_idle: they go to the guest, or skip saying why.

``PYDAMON_GUEST=off`` skips guest tests; ``PYDAMON_GUEST_KERNEL`` boots another kernel image
(e.g. ``$PYDAMON_TESTBED/bzImage-6.1``); ``PYDAMON_GUEST_MEM`` (default ``2G``),
``PYDAMON_GUEST_CPUS`` (2) and ``PYDAMON_GUEST_TIMEOUT`` (seconds, 1800) tune the guest.
See docs/testing.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
# (overridable so that the suite can test its own dispatch as if the host had page_idle)
PAGE_IDLE_BITMAP = os.environ.get("PYDAMON_PAGE_IDLE_BITMAP", "/sys/kernel/mm/page_idle/bitmap")
IN_GUEST_ENV = "PYDAMON_IN_GUEST"
SELECT_ENV = "PYDAMON_GUEST_SELECT"
RESULTS_ENV = "PYDAMON_GUEST_RESULTS"


def in_guest() -> bool:
    return os.environ.get(IN_GUEST_ENV) == "1"


#: This host runs a DAMON of its own: the CLI's kernel backend (default --backend auto) of host
#: tests looks at a DAMON root that does not exist, so nothing can ever write the host's sysfs.
HOST_DAMON_ROOT = "/nonexistent/pydamon-host-tests/damon"
if not in_guest():
    os.environ["PYDAMON_DAMON_ROOT"] = HOST_DAMON_ROOT
elif os.environ.get("PYDAMON_DAMON_ROOT") == HOST_DAMON_ROOT:
    del os.environ["PYDAMON_DAMON_ROOT"]


def page_idle_usable() -> bool:
    return os.access(PAGE_IDLE_BITMAP, os.R_OK | os.W_OK)


def testbed_dir() -> Path:
    override = os.environ.get("PYDAMON_TESTBED")
    return Path(override) if override else REPO.parent / "shared" / "testbed"


def guest_unavailable_reason() -> str | None:
    """Why the test guest cannot be booted here, or None if it can."""
    tb = testbed_dir()
    if not (tb / "run-in-vm.sh").is_file() or not (tb / "bzImage").is_file():
        return f"no test bed at {tb} (run-in-vm.sh + bzImage); set PYDAMON_TESTBED to its directory"
    kernel = os.environ.get("PYDAMON_GUEST_KERNEL", "")
    if kernel and not os.path.isfile(kernel):
        return f"PYDAMON_GUEST_KERNEL={kernel} is not a kernel image file"
    missing = [
        what
        for what, ok in (
            ("qemu-system-x86_64", shutil.which("qemu-system-x86_64")),
            ("busybox-static (/bin/busybox)", os.access("/bin/busybox", os.X_OK)),
            ("cpio", shutil.which("cpio")),
        )
        if not ok
    ]
    if missing:
        return (
            f"test guest needs {', '.join(missing)} "
            "(apt-get install qemu-system-x86 busybox-static cpio)"
        )
    return None


# -- how guest tests run in this session ----------------------------------------------------------


@dataclass
class GuestRun:
    """The state of this session's single guest boot."""

    nodeids: list[str] = field(default_factory=list)
    done: bool = False
    #: nodeid -> {"outcome": ..., "text": ...} from the inner run.
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Set when the guest run as a whole failed (timeout, crash, no results).
    error: str | None = None
    seconds: float = 0.0


_mode: str = "native"  # native | guest | skip
_skip_reason = ""
_guest_run = GuestRun()


#: The guest's tracing options; see _no_cmdline_recording_in_the_guest().
GUEST_TRACING_OPTIONS = ("/sys/kernel/tracing/options", "/sys/kernel/debug/tracing/options")


def _no_cmdline_recording_in_the_guest() -> None:
    """Turn the guest's ``record-cmd`` tracing option off.

    With it on (the default), enabling any trace event (the kernel backend enables
    damon:damon_aggregated in an instance of its own) also hooks sched_switch and sched_wakeup,
    so each start and stop live-patches the scheduler's hottest jump labels. Under qemu's TCG that
    patching crashes the guest now and then (``Oops: int3`` in __schedule or try_to_wake_up; a
    loop of enable/disable under a pipe load crashes it within ~15 toggles, and survives 225 in
    120 s with the option off). The guest is ours to configure; real hardware is not affected.
    """
    for options in GUEST_TRACING_OPTIONS:
        path = os.path.join(options, "record-cmd")
        if os.path.exists(path):
            with open(path, "w") as f:
                f.write("0")
            return


def pytest_configure(config: pytest.Config) -> None:
    global _mode, _skip_reason
    if in_guest():
        _no_cmdline_recording_in_the_guest()
    if in_guest() or page_idle_usable():
        _mode = "native"
    elif os.environ.get("PYDAMON_GUEST", "").lower() in ("off", "0", "no"):
        _mode, _skip_reason = "skip", "guest tests turned off (PYDAMON_GUEST=off)"
    else:
        reason = guest_unavailable_reason()
        if reason is None:
            _mode = "guest"
        else:
            _mode = "skip"
            _skip_reason = (
                f"needs page_idle ({PAGE_IDLE_BITMAP} missing or not writable: kernel "
                f"CONFIG_IDLE_PAGE_TRACKING and root) and the test guest is unavailable: {reason}"
            )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if in_guest():
        _select_inner(config, items)
        return
    guest_reason = None if _mode == "guest" else guest_unavailable_reason()
    for i, item in enumerate(items):
        if item.get_closest_marker("guest") is None:
            continue
        if _mode == "native" and not changes_system(item):
            continue
        if _mode == "native" and guest_reason is not None:
            # this host has page_idle, but the test would change it (swap, cgroups, DAMON)
            item.add_marker(
                pytest.mark.skip(
                    reason="changes the system (swap, cgroups, kernel DAMON): runs only inside "
                    f"the test guest, which is unavailable: {guest_reason}"
                )
            )
            continue
        if _mode == "skip":
            item.add_marker(pytest.mark.skip(reason=_skip_reason))
            continue
        items[i] = GuestProxy.from_item(item)
        _guest_run.nodeids.append(item.nodeid)


def changes_system(item: pytest.Item) -> bool:
    """Whether a guest test changes the machine it runs on (so only the guest may run it)."""
    fixtures = getattr(item, "fixturenames", ())
    return item.get_closest_marker("changes_system") is not None or "zram_swap" in fixtures


def _select_inner(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Inside the guest: keep only the tests the host asked for."""
    select_file = os.environ.get(SELECT_ENV)
    if not select_file:
        return
    wanted = set(Path(select_file).read_text().splitlines())
    keep = [item for item in items if item.nodeid in wanted]
    deselected = [item for item in items if item.nodeid not in wanted]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    items[:] = keep


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Inside the guest: record each test's outcome for the host."""
    results_file = os.environ.get(RESULTS_ENV)
    if not (in_guest() and results_file):
        return
    if report.when != "call" and report.outcome == "passed":
        return
    text = ""
    if report.outcome == "skipped" and isinstance(report.longrepr, tuple):
        text = str(report.longrepr[2])
    elif report.longrepr is not None:
        text = report.longreprtext
    if hasattr(report, "wasxfail"):
        text = f"xfail: {report.wasxfail}"
    entry = {
        "nodeid": report.nodeid,
        "when": report.when,
        "outcome": report.outcome,
        "text": text,
        "duration": report.duration,
    }
    with open(results_file, "a") as f:
        f.write(json.dumps(entry) + "\n")


class GuestRunFailed(Exception):
    """A guest test failed inside the guest, or the guest run itself failed."""


class GuestProxy(pytest.Item):
    """Stands in on the host for a guest test that runs inside the test guest."""

    @classmethod
    def from_item(cls, item: pytest.Item) -> GuestProxy:
        proxy = cls.from_parent(item.parent, name=item.name)
        proxy.own_markers.extend(item.iter_markers())
        proxy.keywords.update(dict(item.keywords))
        proxy._location = item.location
        return proxy

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self._location

    def runtest(self) -> None:
        if not _guest_run.done:
            _boot_guest(self.config)
        if _guest_run.error:
            raise GuestRunFailed(_guest_run.error)
        result = _guest_run.results.get(self.nodeid)
        if result is None:
            raise GuestRunFailed("the inner pytest in the guest did not report this test")
        if result["outcome"] == "skipped":
            pytest.skip(f"(in guest) {result['text']}")
        if result["outcome"] == "failed":
            raise GuestRunFailed(f"failed in the test guest ({result['when']}):\n{result['text']}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None) -> str:  # type: ignore[override]
        if isinstance(excinfo.value, GuestRunFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)  # type: ignore[return-value]


def _boot_guest(config: pytest.Config) -> None:
    """Run all of this session's guest tests in one guest boot."""
    run = _guest_run
    run.done = True

    def say(line: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        capman = config.pluginmanager.get_plugin("capturemanager")
        if reporter is None or capman is None:
            return
        with capman.global_and_fixture_disabled():
            reporter.write_line(line)

    results_dir = Path(tempfile.mkdtemp(prefix="pydamon-guest-"))
    try:
        select = results_dir / "nodeids"
        select.write_text("\n".join(run.nodeids) + "\n")
        results = results_dir / "results.jsonl"
        files = sorted({nodeid.split("::")[0] for nodeid in run.nodeids})
        # the whole guest part takes ~10-12 min on a quiet 2-core machine, longer on a loaded one
        timeout_s = int(os.environ.get("PYDAMON_GUEST_TIMEOUT", "1800"))
        kernel = os.environ.get("PYDAMON_GUEST_KERNEL", "")
        cmd = [
            "bash",
            str(testbed_dir() / "run-in-vm.sh"),
            # another kernel of the test bed (e.g. bzImage-6.1); default: run-in-vm.sh's own
            *(["-k", kernel] if kernel else []),
            "-m",
            os.environ.get("PYDAMON_GUEST_MEM", "2G"),
            "-c",
            os.environ.get("PYDAMON_GUEST_CPUS", "2"),
            "-t",
            str(timeout_s),
            # Without PCID every CR3 write flushes qemu's TLB, so with pti=on each kernel entry
            # does: accesses then set the PTE Accessed bit again after page_idle cleared it.
            "-a",
            os.environ.get("PYDAMON_GUEST_KERNEL_ARGS", "nopcid"),
            "-w",
            str(results_dir),
            "-C",
            str(config.rootpath),
            "-e",
            f"{IN_GUEST_ENV}=1",
            "-e",
            f"{SELECT_ENV}={select}",
            "-e",
            f"{RESULTS_ENV}={results}",
            # Entry-point plugin discovery (hypothesis's plugin above all) costs ~20 s in the
            # emulated guest; guest tests need no third-party pytest plugin.
            "-e",
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1",
            # the source tree this session tests (a worktree's src first on the path)
            *(
                ["-e", f"PYTHONPATH={os.environ['PYTHONPATH']}"]
                if os.environ.get("PYTHONPATH")
                else []
            ),
            "--",
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "-rN",
            *files,
        ]
        say(f"[guest] booting the test guest for {len(run.nodeids)} guest test(s)...")
        started = time.monotonic()
        for _attempt in range(2):
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s + 60)
            # Under emulation the guest kernel occasionally dies while booting: boot once more
            # if it died before any test reported.
            if proc.returncode != 125 or (results.exists() and results.stat().st_size):
                break
            say("[guest] the guest died before running tests; booting again")
        run.seconds = time.monotonic() - started
        say(f"[guest] guest run finished in {run.seconds:.0f} s")
        if results.exists():
            for line in results.read_text().splitlines():
                entry = json.loads(line)
                prev = run.results.get(entry["nodeid"])
                # the first failure or skip of a test (setup/call/teardown) decides its outcome
                if prev is None or prev["outcome"] == "passed":
                    run.results[entry["nodeid"]] = entry
        output = (proc.stdout + proc.stderr).splitlines()
        tail = "\n".join(output[-40:])
        if proc.returncode == 125:
            # the console's first oops lines say why; the tail is mostly the last stack dump
            oops = [ln for ln in output if re.search(r"Oops|BUG:|RIP: 0010|Comm:|panic", ln)]
            tail = "\n".join(oops[:6] + ["[...]"] + output[-30:])
        if proc.returncode == 124:
            run.error = f"the test guest timed out after {timeout_s} s (PYDAMON_GUEST_TIMEOUT)"
        elif proc.returncode == 125:
            run.error = f"the test guest died:\n{tail}"
        elif not run.results:
            run.error = f"the guest run reported no results (exit {proc.returncode}):\n{tail}"
        if run.error and run.results:
            # keep what was reported, blame the run only for the rest
            for nodeid in run.nodeids:
                run.results.setdefault(
                    nodeid, {"outcome": "failed", "when": "guest", "text": run.error}
                )
            run.error = None
    except subprocess.TimeoutExpired:
        run.error = "the test guest did not stop (run-in-vm.sh hung past its timeout)"
    finally:
        shutil.rmtree(results_dir, ignore_errors=True)


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def page_idle_available() -> bool:
    """Whether this process can use the page_idle bitmap (true in guest tests)."""
    return page_idle_usable()
