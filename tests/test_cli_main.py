"""The command dispatcher: every command is mapped to its module, light commands stay light."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pydamon.cli.main import COMMAND_MODULES, COMMAND_OF, build_parser


def _subcommands(parser) -> set[str]:
    for action in parser._actions:
        if getattr(action, "choices", None) and action.dest == "command":
            return set(action.choices)
    raise AssertionError("no subcommands")


def test_every_command_is_mapped_to_the_module_that_registers_it():
    assert _subcommands(build_parser()) == set(COMMAND_OF)
    assert set(COMMAND_OF.values()) == set(COMMAND_MODULES)
    for command in COMMAND_OF:
        assert command in _subcommands(build_parser(command))


def test_status_does_not_import_numpy_and_sees_no_module_services(tmp_path):
    # A module service's state must not show up as a dead background monitor.
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "stat.pid").write_text("1\n")
    code = (
        "import sys, json; from pydamon.cli.main import main; rc = main(['status', '--json']); "
        "print(json.dumps({'rc': rc, 'numpy': 'numpy' in sys.modules}))"
    )
    env = dict(os.environ, PYDAMON_RUN_DIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert result == {"rc": 0, "numpy": False}
    assert "modules" not in "\n".join(lines[:-1])
