"""--help of every command (with examples), shell completion, exit codes, convert."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from pydamon.cli.main import build_parser, main
from pydamon.record import read_record

PYDAMON = [sys.executable, "-m", "pydamon.cli.main"]
MINE = ("record", "report", "start", "stop", "status", "tune", "schemes", "convert", "completion")


def test_every_command_has_help_with_examples(capsys):
    parser = build_parser()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in MINE:
        assert name in subs.choices, name
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert "usage: pydamon " + name in text
        assert "examples:" in text, name
    report = subs.choices["report"]
    rsubs = next(a for a in report._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(rsubs.choices) >= {"heatmap", "wss", "access", "footprints", "times",
                                  "nr_regions", "raw", "info"}  # fmt: skip


def test_usage_errors_exit_2_without_traceback():
    out = subprocess.run([*PYDAMON, "report", "wss", "--range", "x"], capture_output=True,
                         text=True)  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert main(["report"]) == 2


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
def test_bash_completion_script_completes_commands_and_options(tmp_path):
    script = subprocess.run([*PYDAMON, "completion", "bash"], capture_output=True, text=True,
                            check=True).stdout  # fmt: skip
    (tmp_path / "c.sh").write_text(script)
    probe = """
source c.sh
t() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _pydamon; echo "${COMPREPLY[*]}"; }
t pydamon rec
t pydamon report he
t pydamon report heatmap --out
t pydamon record --sim hotcold --time
"""
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.split("\n")[:4] == ["record", "heatmap", "--output", "--timeout"], out


def test_convert_between_formats(tmp_path):
    subprocess.run([*PYDAMON, "record", "--sim", "zigzag", "--timeout", "2", "-q", "-o", "a.data"],
                   cwd=tmp_path, check=True)  # fmt: skip
    a = read_record(tmp_path / "a.data")
    assert main(["convert", str(tmp_path / "a.data"), "-o", str(tmp_path / "d.data")]) == 0
    assert main(["convert", str(tmp_path / "d.data"), "-o", str(tmp_path / "b.data"),
                 "--output_type", "pydamon", "--compress", "6"]) == 0  # fmt: skip
    b = read_record(tmp_path / "b.data")
    assert read_record(tmp_path / "d.data").source_format == "damo-json_compressed"
    assert (a.starts == b.starts).all() and (a.nr_accesses == b.nr_accesses).all()
    assert (a.age == b.age).all() and (a.snap_end_us == b.snap_end_us).all()
    assert main(["convert", str(tmp_path / "a.data"), "-o", str(tmp_path / "a.data")]) == 2
