"""``pydamon features`` lists what a kernel's DAMON offers, read from its sysfs tree only."""

from __future__ import annotations

import json
from pathlib import Path

from kernel_tree import LINUX_6_1, LINUX_7_1, fake_kernel, tree_files
from pydamon.cli.main import main
from pydamon.core import Attrs, Target
from pydamon.damos.scheme import Scheme
from pydamon.kernel import ContextConfig, DamonSysfs


def test_features_lists_a_kernels_damon_without_writing(tmp_path: Path, capsys) -> None:
    kernel = fake_kernel(tmp_path, LINUX_7_1)
    # a kdamond of someone else's, configured and running: features only reads it
    damon = DamonSysfs(str(kernel.root), io=kernel)
    damon.add_kdamonds(1)
    # with a scheme, so that the read-only probe sees the scheme directories' files too
    damon.write(0, [ContextConfig("vaddr", Attrs(), [Target(pid=1)], [Scheme()])])
    before = tree_files(kernel.root)
    main(["features", "--json", "--damon-root", str(kernel.root)])
    out = json.loads(capsys.readouterr().out)["kernel_damon"]
    assert tree_files(kernel.root) == before
    assert out["sysfs"] and out["inspected"] and "vaddr" in out["operations"]
    assert out["files"]["intervals_goal"] and out["version_floor"]
    assert out["emulated_by_pydamon"] == []  # 7.1 has all pydamon could run on top
    main(["features", "--damon-root", str(kernel.root)])
    text = capsys.readouterr().out
    assert f"kernel DAMON ({kernel.root}): present" in text and "operations" in text


def test_features_says_what_an_old_kernel_lacks(tmp_path: Path, capsys) -> None:
    kernel = fake_kernel(tmp_path, LINUX_6_1)
    damon = DamonSysfs(str(kernel.root), io=kernel)
    damon.add_kdamonds(1)
    damon.write(0, [ContextConfig("vaddr", Attrs(), [Target(pid=1)], [])])
    main(["features", "--damon-root", str(kernel.root)])
    text = capsys.readouterr().out
    missing = next(line for line in text.splitlines() if "features missing" in line)
    assert "tried_regions" in missing and "quota_goals" in missing
    emulated = next(line for line in text.splitlines() if "emulated by pydamon" in line)
    assert "intervals auto-tuning" in emulated and "quota goals (all metrics)" in emulated
    assert "allow filters" not in emulated  # 6.1 has no filters at all to rewrite


def test_features_without_a_damon_tree(tmp_path: Path, capsys) -> None:
    main(["features", "--damon-root", str(tmp_path / "none")])
    assert "none (no DAMON sysfs tree)" in capsys.readouterr().out
