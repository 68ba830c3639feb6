import subprocess
import sys

import pydamon


def test_package_imports_and_cli_help():
    assert pydamon.__version__
    out = subprocess.run(
        [sys.executable, "-m", "pydamon.cli.main", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert "demo" in out.stdout
