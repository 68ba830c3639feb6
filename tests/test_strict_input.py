"""Bad input never widens a scheme nor hangs a command (issue 12, findings 1, 5, 7, 8 and 9).

Each finding re-run as written: scheme files with typos and out-of-range values (every form),
CLI values of zero, inf, nan or overlapping ranges, exit codes by cause, and help that helps.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from pydamon.cli.main import main
from pydamon.damos import SchemeFileError, dump_schemes, parse_schemes
from pydamon.damos.kinds import Action
from pydamon.extras import install_hint
from pydamon.modules import ParamError, load_module
from pydamon.units import ULONG_MAX

PYDAMON = [sys.executable, "-m", "pydamon.cli.main"]


def _hung(_signum: int, _frame: object) -> None:
    raise TimeoutError("the command hung (e.g. --sample 0 spinning forever)")


def run_main(argv: list[str], capsys, limit_s: float = 60) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``pydamon ARGV`` through the CLI's entry point, failing
    (not hanging) if it runs longer than ``limit_s``."""
    old = signal.signal(signal.SIGALRM, _hung)
    signal.setitimer(signal.ITIMER_REAL, limit_s)
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse: --help (0) and usage errors (2)
        code = int(exit_info.code or 0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# -- finding 1: a typo widens a scheme ------------------------------------------------------------

# the file: paged out 30 GiB of the simulated target (the same file spelt right: 0 B)
TYPO = (
    '[{"action": "pageout", "access_pattern": {"age": {"mn": "60s"}}, "quotas": {"sz_byte": "1M"}}]'
)


@pytest.mark.parametrize(
    "doc, fmt, where, hint",
    [
        (TYPO, "json", "[0].access_pattern.age.mn", "did you mean 'min'?"),
        (
            '[{"action": "pageout", "quotas": {"sz_byte": "1M"}}]',
            "json",
            "[0].quotas.sz_byte",
            "did you mean 'sz_bytes'?",
        ),
        (
            '[{"action": "pageout", "acess_pattern": {"age": {"min": "60s"}}}]',
            "json",
            "[0].acess_pattern",
            "did you mean 'access_pattern'?",
        ),
        (
            "- action: pageout\n  acces_pattern:\n    age: {min: 60s}\n",
            "yaml",
            "[0].acces_pattern",
            "did you mean 'access_pattern'?",
        ),
        (
            '{"schemes": [{"action": "stat", "watermarks": {"metrc": "free_mem_rate"}}]}',
            "json",
            "schemes[0].watermarks.metrc",
            "did you mean 'metric'?",
        ),
        (
            '[{"quotas": {"goals": [{"metric": "user_input", "target_valeu": 5}]}}]',
            "json",
            "[0].quotas.goals[0].target_valeu",
            "did you mean 'target_value'?",
        ),
        (
            '[{"filters": [{"filter_type": "anon", "alow": true}]}]',
            "json",
            "[0].filters[0].alow",
            "did you mean 'allow'?",
        ),
        (
            '[{"access_pattern": {"sz_bytes": {"minimum": "4K"}}}]',
            "json",
            "[0].access_pattern.sz_bytes.minimum",
            "did you mean 'min'?",
        ),
    ],
)
def test_an_unknown_key_is_an_error_naming_the_closest_known_one(doc, fmt, where, hint):
    with pytest.raises(SchemeFileError) as info:
        parse_schemes(doc, fmt, source="s")
    msg = str(info.value)
    assert msg.startswith(f"s: {where}: unknown key") and hint in msg and "\n" not in msg


@pytest.mark.parametrize(
    "doc, fmt, where, allowed",
    [
        # access rate 0 200 percent, in every form
        (
            '[{"access_pattern": {"nr_accesses": {"min": 0, "max": 200}}}]',
            "json",
            "[0].access_pattern.nr_accesses.max",
            "0 to 100",
        ),
        (
            "- access_pattern:\n    nr_accesses: {min: 0, max: 200}\n",
            "yaml",
            "[0].access_pattern.nr_accesses.max",
            "0 to 100",
        ),
        ("min max 0 200 min max stat", "text", "field 4 (max frequency)", "0 to 100"),
        # watermarks 5000/4000/2000 per mille: monitoring would never start
        (
            '[{"watermarks": {"metric": "free_mem_rate", "interval_us": "5s", '
            '"high_permil": 5000, "mid_permil": 4000, "low_permil": 2000}}]',
            "json",
            "[0].watermarks.high_permil",
            "0 to 1000 per mille",
        ),
        (
            "min max 0 100 min max stat 0 0 0 0 0 0 free_mem_rate 5s 5000 4000 2000",
            "text",
            "field 16 (high watermark)",
            "0 to 1000 per mille",
        ),
        # a watermark check interval of 0
        (
            '[{"watermarks": {"metric": "free_mem_rate", "interval_us": 0, '
            '"high_permil": 500, "mid_permil": 400, "low_permil": 200}}]',
            "json",
            "[0].watermarks.interval_us",
            "above 0",
        ),
        (
            "min max 0 100 min max stat 0 0 0 0 0 0 free_mem_rate 0 500 400 200",
            "text",
            "field 15 (watermark interval)",
            "above 0",
        ),
        # min > max, negative and infinite values
        (
            '[{"access_pattern": {"age": {"min": "1h", "max": "1s"}}}]',
            "json",
            "[0].access_pattern.age",
            "range is empty",
        ),
        (
            '[{"quotas": {"weights": {"age_permil": -1}}}]',
            "json",
            "[0].quotas.weights.age_permil",
            "must not be negative",
        ),  # fmt: skip
        ("- quotas: {time_ms: .inf}\n", "yaml", "[0].quotas.time_ms", "not a finite number"),
        ("- quotas: {sz_bytes: .nan}\n", "yaml", "[0].quotas.sz_bytes", "not a finite number"),
    ],
)
def test_a_value_out_of_range_is_an_error_naming_the_field_and_range(doc, fmt, where, allowed):
    with pytest.raises(SchemeFileError) as info:
        parse_schemes(doc, fmt, source="s")
    msg = str(info.value)
    assert msg.startswith("s:") and where in msg and allowed in msg and "\n" not in msg, msg


def test_what_damo_and_the_kernel_allow_still_reads():
    # missing parts keep their defaults (damo's from_kvpairs), 'max' bounds a percentage range
    (s,) = parse_schemes('[{"action": "stat"}]', "json")
    assert s.pattern.max_nr_accesses == ULONG_MAX and not s.quota.is_set
    (s,) = parse_schemes('[{"access_pattern": {"nr_accesses": {"min": 5, "max": "max"}}}]')
    assert (s.pattern.min_nr_accesses, s.pattern.max_nr_accesses) == (5, ULONG_MAX)
    # damo's output of a running scheme: stats, tried regions, effective quota, empty dests
    kv = json.loads(
        dump_schemes(
            parse_schemes("4K max 0 0 60s max pageout 10ms 1G 1s 0 0 0 none 0 0 0 0"), "json"
        )
    )
    kv[0].update(stats={"nr_tried": 3}, tried_regions=[], dests=[])
    kv[0]["quotas"]["effective_sz_bytes"] = 4096
    (s,) = parse_schemes(json.dumps(kv), "json")
    assert s.action == Action.PAGEOUT and s.quota.sz == 1 << 30
    # a number at or above ULONG_MAX is 'max' (damo's min(ulong_max, ...)), even if the unit
    # conversion overflows a float
    (s,) = parse_schemes('[{"quotas": {"time_ms": 1e308}}]', "json")
    assert s.quota.ms == ULONG_MAX
    # watermarks without a metric are unused: their zero interval is no error
    (s,) = parse_schemes('[{"watermarks": {"metric": "none", "interval_us": 0}}]', "json")
    assert s.wmarks.interval_us == 0


def test_a_misspelt_scheme_file_pages_out_nothing(tmp_path, capsys):
    (tmp_path / "typo.json").write_text(TYPO)
    code, out, err = run_main(
        ["schemes", "--sim", "hotcold", "--schemes", str(tmp_path / "typo.json"), "--json"],
        capsys,
    )
    line = one_line_error(err)
    assert code == 1 and out == ""
    assert "[0].access_pattern.age.mn: unknown key 'mn' (did you mean 'min'?)" in line
    (tmp_path / "right.json").write_text(
        TYPO.replace('"mn"', '"min"').replace("sz_byte", "sz_bytes")
    )
    code, out, err = run_main(
        ["schemes", "--sim", "hotcold", "--schemes", str(tmp_path / "right.json"), "--json",
         "--timeout", "2", "--seed", "1"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)["schemes"]
    assert rows[0]["nr_tried"] == 0 and rows[0]["sz_applied"] == 0


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--damos_access_rate", "0", "200"], "bad --damos_access_rate MAX: '200': out of range"),
        (["--damos_age", "1h", "1s"], "bad --damos_age: access pattern age range is empty"),
        (["--damos_sz_region", "4K", "-1"], "bad --damos_sz_region MAX"),
        (["--damos_age", "5s", "soon"], "bad --damos_age MAX: 'soon' is not a duration"),
        (["--damos_acess_rate", "0", "0"], "did you mean --damos_access_rate?"),
    ],
)
def test_scheme_options_are_checked(argv, words, capsys):
    code, _, err = run_main(["schemes", "--sim", "hotcold", "--damos_action", "stat", *argv],
                            capsys)  # fmt: skip
    assert code == 2 and words in one_line_error(err)


def test_module_parameters_are_checked(capsys):
    reclaim = load_module("reclaim")
    with pytest.raises(ParamError, match=r"no parameter 'min_ag' \(did you mean 'min_age'\?\)"):
        reclaim(ops="sim", min_ag="5s")
    with pytest.raises(ParamError, match="wmarks_high: 5000 permil is above 1000"):
        reclaim(ops="sim", wmarks_high=5000)
    with pytest.raises(ParamError, match="wmarks_interval: 0 us is below 1"):
        reclaim(ops="sim", wmarks_interval=0)
    code, _, err = run_main(["module", "run", "reclaim", "--ops", "sim", "--wmarks-mid", "4000"],
                            capsys)  # fmt: skip
    assert code == 2 and "wmarks_mid: 4000 permil is above 1000" in one_line_error(err)


# -- findings 5 and 7: CLI values -----------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, words",
    [
        (["record", "--sim", "hotcold", "--sample", "0"], "-s/--sample: '0': must be above 0"),
        (["record", "--sim", "hotcold", "-u", "0"], "-u/--updr: '0': must be above 0"),
        (
            ["record", "--sim", "hotcold", "--monitoring_intervals", "0", "100ms", "1s"],
            "--monitoring_intervals: '0': must be above 0",
        ),  # fmt: skip
        (["record", "--sim", "hotcold", "--sim_size", "0"], "--sim_size: '0': must be above 0"),
        (["record", "--sim", "hotcold", "--sim_speed", "0"], "--sim_speed: '0'"),
        (["record", "--sim", "hotcold", "--sim_speed", "-1"], "--sim_speed: '-1'"),
        (["record", "--sim", "hotcold", "--sim_speed", "nan"], "--sim_speed: 'nan'"),
        (
            ["record", "--sim", "hotcold", "--regions", "0x1000-0x2000,0x1800-0x3000"],
            "--regions overlap: 0x1000-0x2000 and 0x1800-0x3000",
        ),  # fmt: skip
        (["record", "--sim", "hotcold", "--compress", "10"], "--compress: '10': a zlib level"),
        (
            ["record", "--sim", "hotcold", "--output_permission", "000"],
            "--output_permission: '000': the owner could not read",
        ),  # fmt: skip
        (["record", "--sim", "hotcold", "--timeout", "inf"], "--timeout: 'inf'"),
        (["record", "--sim", "hotcold", "--timeout", "nan"], "--timeout: 'nan'"),
        (["record", "--sim", "hotcold", "--minr", "1"], "-n/--minr: '1': must be at least 3"),
        (["start", "--sim", "hotcold", "--sample", "0"], "-s/--sample: '0': must be above 0"),
        (["tune", "--sample", "0"], "-s/--sample: '0': must be above 0"),
        (["stop", "--timeout", "-1"], "--timeout: '-1'"),
        (
            ["schemes", "--sim", "hotcold", "--damos_action", "stat", "--timeout", "inf"],
            "--timeout: 'inf'",
        ),  # fmt: skip
        (["module", "run", "stat", "--ops", "sim", "--duration", "-1"], "--duration: '-1'"),
        (["module", "run", "--duration", "inf", "stat", "--ops", "sim"], "--duration: 'inf'"),
        (
            ["module", "start", "stat", "--ops", "sim", "--report-interval", "-5"],
            "--report-interval: '-5'",
        ),  # fmt: skip
    ],
)
def test_cli_values_are_checked_in_one_line(argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(argv, capsys, limit_s=20)
    assert code == 2 and words in one_line_error(err)
    assert os.listdir(tmp_path) == []  # refused before anything started or was written


def test_record_sample_zero_no_longer_spins():
    """It spun at 97 % CPU forever, ignoring --timeout; now it is refused at once."""
    argv = ["record", "--sim", "hotcold", "--sample", "0", "--timeout", "1", "-o", os.devnull]
    out = subprocess.run([*PYDAMON, *argv], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--sample" in one_line_error(out.stderr)


# -- finding 8: exit codes by cause ---------------------------------------------------------------


def test_a_bad_scheme_file_exits_1_in_every_command(tmp_path, capsys):
    (tmp_path / "bad.json").write_text('[{"action": "pageout", "acess_pattern": {}}]')
    for command in (["schemes"], ["record", "-o", str(tmp_path / "r.data")]):
        code, _, err = run_main([*command, "--sim", "hotcold", "--schemes",
                                 str(tmp_path / "bad.json")], capsys)  # fmt: skip
        assert code == 1 and "did you mean 'access_pattern'?" in one_line_error(err)
        code, _, err = run_main([*command, "--sim", "hotcold", "--schemes",
                                 str(tmp_path / "none.json")], capsys)  # fmt: skip
        assert code == 1 and "no such scheme file" in one_line_error(err)


@pytest.mark.skipif(
    os.access("/sys/kernel/mm/page_idle/bitmap", os.R_OK),
    reason="page_idle is there: its absence cannot be shown",
)
def test_a_missing_page_idle_exits_3_from_every_command(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        pid = str(sleeper.pid)
        for argv in (
            ["record", "-p", pid, "--timeout", "2", "-q", "-o", str(tmp_path / "r.data")],
            ["schemes", "-p", pid, "--damos_action", "stat", "--timeout", "2", "-q"],
            [
                "module",
                "run",
                "stat",
                "--ops",
                "vaddr",
                "--pid",
                pid,
                "--duration",
                "2",
                "--run-dir",
                str(tmp_path),
                "--report-interval",
                "0",
            ],  # fmt: skip
        ):
            out = subprocess.run([*PYDAMON, *argv], capture_output=True, text=True, timeout=60)
            assert out.returncode == 3, (argv, out.stderr)
            assert "page_idle" in one_line_error(out.stderr)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_missing_optional_package_names_an_install_that_works(monkeypatch):
    # this suite runs from a source tree: 'pydamon[yaml]' is no package pip can find there
    assert install_hint("matplotlib", "plot").startswith("pip install matplotlib")
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml raises ImportError
    with pytest.raises(SchemeFileError) as info:
        parse_schemes("- action: stat\n", "yaml", source="s.yaml")
    assert "pip install pyyaml" in str(info.value)


def test_a_missing_matplotlib_exits_1_with_an_install_that_works(tmp_path, monkeypatch, capsys):
    # finding 8: a missing optional package is no kernel feature (exit 3 is for those)
    record = tmp_path / "r.data"
    assert main(["record", "--sim", "hotcold", "--timeout", "2", "-o", str(record), "-q"]) == 0
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    capsys.readouterr()
    code = main(["report", "heatmap", "-i", str(record), "--output", str(tmp_path / "h.png")])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "needs matplotlib" in one_line_error(err) and "pip install matplotlib" in err


# -- finding 9: help that helps -------------------------------------------------------------------


def test_module_run_help_lists_runner_options_and_module_parameters(capsys):
    code, out, _ = run_main(["module", "run", "--help"], capsys)
    assert code == 0
    for option in ("--duration", "--format", "--report-interval", "--instance", "--run-dir"):
        assert option in out, option
    code, out, err = run_main(["module", "run", "reclaim", "--help"], capsys)
    assert code == 0 and err == ""
    assert "--min-age" in out and "--wmarks-high" in out and "--duration" in out
    code, out, _ = run_main(["module", "start", "stat", "-h"], capsys)
    assert code == 0 and "--report-interval" in out


def test_the_scheme_file_format_is_one_help_away(capsys):
    code, out, _ = run_main(["schemes", "--help"], capsys)
    assert code == 0 and "--help-format" in out
    assert "see 'pydamon schemes --help')" not in out  # no longer sends the reader to itself
    code, out, _ = run_main(["schemes", "--help-format"], capsys)
    assert code == 0 and "access_pattern" in out and "watermarks" in out
    # its examples are right: the JSON example and the text lines parse
    start, end = out.index("  [{"), out.index("  A missing part")
    (s,) = parse_schemes(out[start:end], "json")
    assert s.action == Action.PAGEOUT and s.wmarks.high == 500 and s.quota.goals
    lines = [ln for ln in out.splitlines() if re.match(r"\s+(4K|2M)\s", ln)]
    assert len(parse_schemes("\n".join(lines), "text")) == 2
