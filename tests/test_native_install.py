"""The C helper is built by ``pip install`` and loaded only from the installed package.

Each install copies the project's sources (no build products) into a temp directory and
``pip install``\\ s it into a ``--target`` directory, then runs ``pydamon features --json`` from
there: with a compiler the helper is that directory's compiled file; with ``CC=false`` the install
still succeeds, warns, and the pure-Python path runs; as root, a helper file others could write is
refused.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
WARNING = "WARNING: pydamon's C helper (pydamon.ops._fastpath) was not built"


def _have_compiler() -> bool:
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(cc) is not None


def _pip_install(tmp: Path, env_extra: dict[str, str]) -> tuple[Path, str]:
    """Install a clean copy of the project into ``tmp/site``; that dir and pip's output."""
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(
        REPO / "src",
        source / "src",
        ignore=shutil.ignore_patterns("*.so", "__pycache__", "*.egg-info"),
    )
    site = tmp / "site"
    cmd = [sys.executable, "-m", "pip", "install", "-v", "--no-deps", "--no-compile"]
    # Without build isolation (faster, offline) where this Python can build a wheel itself.
    if importlib.util.find_spec("setuptools") and importlib.util.find_spec("wheel"):
        cmd.append("--no-build-isolation")
    cmd += ["--target", str(site), str(source)]
    env = {**os.environ, **env_extra}
    env.pop("PYTHONPATH", None)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return site, out.stdout + out.stderr


def _features(site: Path, home: Path) -> dict:
    """``pydamon features --json`` run from ``site``, with no compiler and an empty home."""
    env = {**os.environ, "PYTHONPATH": str(site), "HOME": str(home), "CC": "false"}
    env.pop("XDG_CACHE_HOME", None)
    out = subprocess.run(
        [sys.executable, "-m", "pydamon.cli.main", "features", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode in (0, 3) and "Traceback" not in out.stderr, out.stderr
    data = json.loads(out.stdout)
    assert data["features"]["c_helper"]["available"] == (data["access_check"]["name"] == "c")
    return data


@pytest.fixture(scope="module")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not _have_compiler():
        pytest.skip("no C compiler here")
    site, output = _pip_install(tmp_path_factory.mktemp("with-cc"), {})
    assert WARNING not in output
    return site


def test_pip_install_builds_the_helper_and_it_is_used(built_site: Path, tmp_path: Path) -> None:
    helpers = list((built_site / "pydamon" / "ops").glob("_fastpath*.so"))
    assert len(helpers) == 1
    data = _features(built_site, tmp_path)
    check = data["access_check"]
    assert check["name"] == "c", check
    assert Path(check["helper_file"]).resolve() == helpers[0].resolve()
    assert str(helpers[0].name) in data["features"]["c_helper"]["detail"]
    # nothing compiled or cached at run time
    assert not (tmp_path / ".cache").exists()


def test_install_without_a_compiler_succeeds_on_the_python_path(tmp_path: Path) -> None:
    site, output = _pip_install(tmp_path, {"CC": "false"})
    assert WARNING in output
    assert not list((site / "pydamon" / "ops").glob("_fastpath*.so"))
    check = _features(site, tmp_path)["access_check"]
    assert check["name"] == "python" and check["helper_file"] == ""
    assert "no compiled helper" in check["why"]


@pytest.mark.skipif(os.geteuid() != 0, reason="the ownership check applies to root only")
@pytest.mark.parametrize(
    ("mode", "uid", "refused_for"),
    [
        (0o775, 0, "group/world-writable"),
        (0o757, 0, "group/world-writable"),
        (0o755, 65534, "owned by uid 65534"),
        (0o755, 0, ""),
    ],
    ids=["group-writable", "world-writable", "not-root's", "root's-0755"],
)
def test_root_refuses_a_helper_others_can_write(
    built_site: Path, tmp_path: Path, mode: int, uid: int, refused_for: str
) -> None:
    site = tmp_path / "site"
    shutil.copytree(built_site, site)
    (helper,) = (site / "pydamon" / "ops").glob("_fastpath*.so")
    os.chown(helper, uid, 0)
    helper.chmod(mode)
    check = _features(site, tmp_path)["access_check"]
    if not refused_for:
        assert check["name"] == "c", check
        return
    assert check["name"] == "python", check
    assert check["why"].startswith(f"refused {helper}") and refused_for in check["why"]
    assert check["fix"]
