"""Backend choice (pydamon.backend) and pydamon's kdamond pool (pydamon.kernel.pool) on fake
kernels under tmp_path (tests/kernel_tree.py): never the host's /sys/kernel/mm/damon."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernel_tree import LINUX_6_1, LINUX_6_12, FakeKernel, fake_kernel, tree_files
from pydamon.backend import BackendError, choose_backend, make_context
from pydamon.core import Context, Target
from pydamon.damos.scheme import AccessPattern, Action, Filter, FilterType, Scheme
from pydamon.kernel import DamonSysfs, KdamondNotOwned, KernelContext
from pydamon.kernel.pool import POOL_SLOTS, KdamondPool
from test_kernel_context import ATTRS, expected, kernel_with_tracefs, regions_of
from tracefs_tree import fake_tracefs

TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "run"
    monkeypatch.setenv("PYDAMON_RUN_DIR", str(d))
    return d


def hand_made_kdamond(kernel: FakeKernel) -> None:
    """What an administrator does by hand: one kdamond with a context."""
    kernel.write(str(kernel.root / "kdamonds/nr_kdamonds"), "1")
    kernel.write(str(kernel.root / "kdamonds/0/contexts/nr_contexts"), "1")


def choose(kernel: FakeKernel, kind: str = "auto", **kw: object) -> tuple[str, str]:
    tracefs = fake_tracefs(kernel.root.parent)
    return choose_backend(
        kind,
        str(kw.pop("ops", "vaddr")),
        ATTRS,
        [Target(pid=os.getpid())],
        kw.pop("schemes", ()),  # type: ignore[arg-type]
        damon_root=str(kernel.root),
        io=kernel,
        tracefs=(str(tracefs.root),),
        tracefs_io=tracefs,
    )


def test_auto_picks_the_kernel_that_has_what_is_needed_and_leaves_the_tree_as_it_was(
    tmp_path: Path,
) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_12)
    before = tree_files(kernel.root)
    backend, reason = choose(kernel)
    assert backend == "kernel" and "has what this configuration needs" in reason
    assert tree_files(kernel.root) == before  # the probe's kdamonds are gone again
    assert choose(kernel, "user")[0] == "user"
    assert choose(kernel, "kernel") == (
        "kernel",
        f"kernel DAMON at {kernel.root}, as asked (--backend kernel)",
    )


def test_auto_falls_back_when_the_kernel_lacks_a_feature_and_names_it(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_1)
    scheme = Scheme(
        AccessPattern(), Action.PAGEOUT, filters=[Filter(FilterType.ANON, matching=True)]
    )
    backend, reason = choose(kernel, schemes=[scheme])
    assert backend == "user"
    assert "DAMOS filters (Linux 6.3+)" in reason and "\n" not in reason


def test_user_only_operations_sets_never_go_to_the_kernel(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_12)
    backend, reason = choose(kernel, ops="sim")
    assert backend == "user" and "sim operations set" in reason
    with pytest.raises(BackendError, match="--backend kernel: the sim operations set"):
        choose(kernel, "kernel", ops="sim")
    with pytest.raises(BackendError, match="unknown backend 'fast'"):
        choose(kernel, "fast")


def test_a_hand_made_kdamond_is_never_changed(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_12)
    hand_made_kdamond(kernel)
    before = tree_files(kernel.root)
    backend, reason = choose(kernel)
    assert backend == "user"
    assert "kdamond(s) 0" in reason and "not created by pydamon" in reason
    # asked for explicitly, the kernel backend refuses in one line when it starts
    ctx, backend, _ = make_context(
        "kernel", "vaddr", [Target(pid=os.getpid())], ATTRS, damon_root=str(kernel.root), io=kernel
    )
    assert isinstance(ctx, KernelContext) and backend == "kernel"
    with pytest.raises(KdamondNotOwned, match="did not create"):
        ctx.run(nr_aggregations=1)
    assert tree_files(kernel.root) == before


def test_make_context_builds_either_engine(tmp_path: Path) -> None:
    kernel, tracefs = kernel_with_tracefs(tmp_path / "k", 3)
    ctx, backend, reason = make_context(
        "auto",
        "vaddr",
        [Target(pid=os.getpid())],
        ATTRS,
        damon_root=str(kernel.root),
        io=kernel,
        tracefs=str(tracefs.root),
        tracefs_io=tracefs,
        poll_s=0.01,
    )
    assert backend == "kernel" and isinstance(ctx, KernelContext)
    got = [expected(s[0]) for s in ctx.aggregations(nr_aggregations=3)]
    assert got == [regions_of(a)[0] for a in range(3)]
    assert ctx.meta["pool"] == KdamondPool().path
    # the pool's kdamonds are gone when the last context ends
    assert (kernel.root / "kdamonds/nr_kdamonds").read_text().strip() == "0"
    assert KdamondPool().slots_of(DamonSysfs(str(kernel.root), kernel)) == []
    user, backend, reason = make_context("user", "vaddr", [Target(pid=os.getpid())], ATTRS)
    assert isinstance(user, Context) and backend == "user" and "as asked" in reason


def test_the_pool_serves_several_contexts_at_once(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_12)
    sysfs = DamonSysfs(str(kernel.root), kernel)
    pool = KdamondPool()
    first = pool.acquire(sysfs)
    assert (kernel.root / "kdamonds/nr_kdamonds").read_text().strip() == str(POOL_SLOTS)
    sysfs.start(first)  # running: the kernel refuses nr_kdamonds now (EBUSY)
    second = pool.acquire(sysfs)
    assert second != first and pool.owned(sysfs) == set(range(POOL_SLOTS))
    others = [pool.acquire(sysfs) for _ in range(POOL_SLOTS - 2)]
    with pytest.raises(Exception, match=f"all {POOL_SLOTS} pydamon kdamonds .* are in use"):
        pool.acquire(sysfs)
    for k in [second, *others]:
        pool.release(sysfs, k)
    assert (kernel.root / "kdamonds/nr_kdamonds").read_text().strip() == str(POOL_SLOTS)
    sysfs.stop(first)
    pool.release(sysfs, first)
    assert (kernel.root / "kdamonds/nr_kdamonds").read_text().strip() == "0"


def test_a_pool_that_someone_else_recreated_is_not_believed(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_12)
    sysfs = DamonSysfs(str(kernel.root), kernel)
    pool = KdamondPool()
    pool.acquire(sysfs)
    kernel.write(str(kernel.root / "kdamonds/nr_kdamonds"), "2")  # by hand, recreating all
    assert pool.foreign(DamonSysfs(str(kernel.root), kernel)) == [0, 1]
    with pytest.raises(KdamondNotOwned):
        pool.acquire(DamonSysfs(str(kernel.root), kernel))


ORPHAN_SCRIPT = """
import os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from kernel_tree import FakeKernel, LINUX_6_12
from pydamon.kernel import DamonSysfs
from pydamon.kernel.pool import KdamondPool
kernel = FakeKernel.__new__(FakeKernel)
kernel.__dict__.update(root=Path(sys.argv[2]), layout=LINUX_6_12, deny_writes=False,
    deny_reads=False, kernel_stats={}, kernel_tried={}, kernel_esz={}, kernel_tuned={},
    commands=[], next_pid=5000)
sysfs = DamonSysfs(sys.argv[2], kernel)
k = KdamondPool().acquire(sysfs)
sysfs.start(k)
os._exit(9)  # like kill -9: nothing released
"""


def test_orphans_of_a_killed_pydamon_are_found_and_stopped(tmp_path: Path) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_12)
    done = subprocess.run(
        [sys.executable, "-c", ORPHAN_SCRIPT, str(TESTS), str(kernel.root)], env=os.environ
    )
    assert done.returncode == 9
    sysfs = DamonSysfs(str(kernel.root), kernel)
    pool = KdamondPool()
    orphans = pool.orphans(sysfs)
    assert [(s.index, s.state, s.kdamond_pid) for s in orphans] == [(0, "on", 5000)]
    assert orphans[0].to_dict()["orphan"] is True
    assert [s.index for s in pool.stop_orphans(sysfs)] == [0]
    assert (kernel.root / "kdamonds/nr_kdamonds").read_text().strip() == "0"
    assert pool.orphans(sysfs) == []
