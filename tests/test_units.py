"""One grammar for sizes, durations and percentages: the forms, the errors, and that every reader
(module parameters, scheme files, CLI options, damo records) takes the same forms."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pydamon.cli.main import build_parser
from pydamon.damos import SchemeFileError, parse_schemes
from pydamon.modules import ParamError, load_module
from pydamon.record import read_record
from pydamon.units import (
    ULONG_MAX,
    explain,
    format_bytes,
    format_duration_us,
    parse_bp,
    parse_count,
    parse_duration,
    parse_percent,
    parse_permil,
    parse_size,
)

K, M, G = 1 << 10, 1 << 20, 1 << 30
DAY_US = 86_400 * 10**6

SIZES = [
    ("4096", 4096),
    ("1,024", 1024),
    ("0x1000", 4096),
    ("0X1f", 31),
    ("4K", 4 * K),
    ("4KB", 4 * K),
    ("4KiB", 4 * K),
    ("4kb", 4 * K),
    ("4kib", 4 * K),
    ("4 KiB", 4 * K),
    ("1.5K", 1536),
    ("2M", 2 * M),
    ("2MiB", 2 * M),
    ("128mb", 128 * M),
    ("1G", G),
    ("1GiB", G),
    ("1T", 1 << 40),
    ("1TiB", 1 << 40),
    ("2P", 2 << 50),
    ("12B", 12),
    ("1e3", 1000),
    ("32E", ULONG_MAX),  # above ULONG_MAX: ULONG_MAX, as damo's min(ulong_max, ...)
]

DURATIONS_US = [
    ("250", 250),
    ("1500ns", 1),
    ("5us", 5),
    ("100ms", 100_000),
    ("100 ms", 100_000),
    ("60s", 60 * 10**6),
    ("1.5s", 1_500_000),
    ("5m", 300 * 10**6),
    ("5min", 300 * 10**6),
    ("2h", 7200 * 10**6),
    ("1d", DAY_US),
    ("1D", DAY_US),
    ("1h 30m", 5400 * 10**6),
    ("1h30m", 5400 * 10**6),
    ("1 m 30 s", 90 * 10**6),  # damo's human form
    ("1,000", 1000),
    ("0x10", 16),
]


@pytest.mark.parametrize("text, value", SIZES)
def test_sizes(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text, value", DURATIONS_US)
def test_durations(text, value):
    assert parse_duration(text) == value


def test_duration_units_and_bare_numbers():
    assert parse_duration("3 ms", "ms") == 3
    assert parse_duration("10", "ms") == 10  # a bare number is in the output unit
    assert parse_duration("10", "us", default_unit="ms") == 10_000
    assert parse_duration("1 s 200 ms", "ns") == 1_200_000_000
    assert parse_duration(2.5, "ms", default_unit="s") == 2500  # numbers from JSON/YAML


def test_percent_permil_bp_and_counts():
    assert [parse_percent(x) for x in ("80", "80%", "12.5 %", 5)] == [80, 80, 12.5, 5]
    assert [parse_permil(x) for x in ("500", "50%", "100 %")] == [500, 500, 1000]
    assert [parse_bp(x) for x in ("5000", "50%", "0.5%")] == [5000, 5000, 50]
    assert [parse_count(x) for x in ("5", "1,000", "1e3", "0x10", 7)] == [5, 1000, 1000, 16, 7]
    assert parse_count("-3", signed=True) == -3


@pytest.mark.parametrize(
    "parse, text, message",
    [
        (parse_size, "lots", "'lots' is not a size (use e.g. 4096, 0x1000, 4K"),
        (parse_size, "4X", "'4X': unknown size unit 'X' (use B, K, M, G, T"),
        (parse_size, "4 KiBs", "'4 KiBs': unknown size unit 'KiBs'"),
        (parse_size, "-4K", "'-4K': a size must not be negative"),
        (parse_size, "0x10K", "'0x10K': a hex number takes no unit"),
        (parse_size, "1e400", "'1e400' is not a finite number"),
        (parse_size, "", "'' is not a size"),
        (parse_size, True, "True is not a size"),
        (parse_duration, "fast", "'fast' is not a duration (use e.g. 500us, 100ms, 60s"),
        (parse_duration, "60q", "'60q': unknown time unit 'q' (use ns, us, ms, s, m, h, d"),
        (parse_duration, "1h x", "'1h x' is not a duration"),
        (parse_duration, "-1s", "'-1s': a duration must not be negative"),
        (parse_percent, "x", "'x' is not a percentage (use e.g. 0, 5, 12.5, 80%)"),
        (parse_percent, "5 permil", "'5 permil' is not a percentage"),
        (parse_count, "1.5", "'1.5' is not a whole number"),
        (parse_count, "5K", "'5K' is not a number (use e.g. 12, 1,024, 1.5, 0x10)"),
        (parse_permil, "half", "'half' is not a per-mille value"),
    ],
)
def test_rejected_forms_say_what_is_wrong_and_what_is_accepted(parse, text, message):
    with pytest.raises(ValueError) as info:
        parse(text)
    said = explain(text, info.value)
    assert said.startswith(message)
    assert "\n" not in said


@pytest.mark.parametrize("parse", [parse_size, parse_duration, parse_percent, parse_count])
def test_min_and_max_only_where_the_caller_allows_them(parse):
    for word in ("min", "max", " MAX "):
        with pytest.raises(ValueError, match="not allowed here: min and max only bound a range"):
            parse(word)
    assert parse("min", allow_keywords=True) == 0
    assert parse("max", allow_keywords=True) == ULONG_MAX
    # where they are allowed, the error says so
    with pytest.raises(ValueError, match=", min, max\\)"):
        parse("soon", allow_keywords=True)


def test_formatters():
    assert [format_bytes(x) for x in (0, 512, 1536, 3 * G, 2**60)] == [
        "0 B",
        "512 B",
        "1.500 KiB",
        "3.000 GiB",
        "1024.000 PiB",
    ]
    assert format_bytes(1536, precision=1) == "1.5 KiB"
    assert [format_bytes(x, exact=True) for x in (0, 1536, 4 * K, 2 * M, ULONG_MAX)] == [
        "0",
        "1536",
        "4K",
        "2M",
        "max",
    ]
    assert [format_duration_us(x) for x in (250, 1500, 2 * 10**6, 90 * 10**6)] == [
        "250 us",
        "1.500 ms",
        "2.000 s",
        "1 m 30.000 s",
    ]
    assert format_duration_us(-1500) == "-1.500 ms"
    assert format_duration_us(3_723_000_000).startswith("1 h 2 m 3.000 s")
    assert [format_duration_us(x, exact=True) for x in (1500, 60 * 10**6, DAY_US, ULONG_MAX)] == [
        "1500us",
        "1m",
        "1d",
        "max",
    ]


@pytest.mark.parametrize("text, value", SIZES)
def test_exact_sizes_read_back(text, value):
    assert parse_size(format_bytes(value, exact=True), allow_keywords=True) == value


@pytest.mark.parametrize("text, value", DURATIONS_US)
def test_exact_durations_read_back(text, value):
    assert parse_duration(format_duration_us(value, exact=True)) == value


# -- every reader takes the same forms ---------------------------------------------------------


def module_min_age_and_quota(age: str, size: str) -> tuple[int, int]:
    module = load_module("reclaim")(min_age=age, quota_sz=size)
    return module.p.min_age, module.p.quota_sz


def scheme_text_age_and_size(age: str, size: str) -> tuple[int, int]:
    (s,) = parse_schemes(f"{size} max 0 0 {age} max stat", "text")
    return int(s.pattern.min_age), s.pattern.min_sz_bytes


def scheme_json_age_and_size(age: str, size: str) -> tuple[int, int]:
    doc = {"access_pattern": {"age": {"min": age}, "sz_bytes": {"min": size}}, "action": "stat"}
    (s,) = parse_schemes(json.dumps([doc]))
    return int(s.pattern.min_age), s.pattern.min_sz_bytes


def cli_aggr_and_sim_size(age: str, size: str) -> tuple[int, int]:
    args = build_parser("record").parse_args(["record", "-a", age, "--sim_size", size])
    return args.aggr, args.sim_size


def damo_record_aggr_and_start(age: str, size: str, tmp_path) -> tuple[int, int]:
    region = {
        "start": size,
        "end": "0x7fffffffffff",
        "nr_accesses": {"samples": "1", "percent": None},
        "age": {"usec": "0", "aggr_intervals": "0"},
    }
    record = [
        {
            "intervals": {"sample_us": "1 us", "aggr_us": age, "ops_update_us": "1 s"},
            "target_id": 1,
            "snapshots": [{"start_time": "0", "end_time": "1 s", "regions": [region]}],
        }
    ]
    path = tmp_path / "damo.data"
    path.write_text(json.dumps(record))
    (snap,) = read_record(str(path)).snapshots()
    return snap.aggr_interval_us, int(snap.starts[0])


READERS = [
    module_min_age_and_quota,
    scheme_text_age_and_size,
    scheme_json_age_and_size,
    cli_aggr_and_sim_size,
]


@pytest.mark.parametrize(
    "age, size, expected",
    [
        ("1d", "4kb", (DAY_US, 4 * K)),
        ("1h 30m", "0x1000", (5400 * 10**6, 4096)),
        ("100ms", "4 KiB", (100_000, 4096)),
        ("1,500", "1,024", (1500, 1024)),
        ("1.5s", "1.5M", (1_500_000, 1536 * K)),
        ("2min", "2MiB", (120 * 10**6, 2 * M)),
    ],
)
def test_module_scheme_cli_and_damo_record_take_the_same_forms(age, size, expected, tmp_path):
    # the text form splits fields at whitespace: forms with a space are for the other readers
    readers = [r for r in READERS if " " not in age + size or r is not scheme_text_age_and_size]
    got = [read(age, size) for read in readers]
    got.append(damo_record_aggr_and_start(age, size, tmp_path))
    assert got == [expected] * (len(readers) + 1)


def test_refused_forms_are_refused_by_every_reader_with_one_line():
    with pytest.raises(ParamError, match="parameter min_age: 'soon' is not a duration"):
        load_module("reclaim")(min_age="soon")
    with pytest.raises(ParamError, match="parameter quota_sz: '4X': unknown size unit 'X'"):
        load_module("reclaim")(quota_sz="4X")
    with pytest.raises(SchemeFileError, match="field 5 \\(min age\\) 'soon': not a duration"):
        parse_schemes("4K max 0 0 soon max stat", "text")
    with pytest.raises(
        SchemeFileError, match=r"\[0\].access_pattern.sz_bytes.min: '4X': unknown size"
    ):
        parse_schemes('[{"access_pattern": {"sz_bytes": {"min": "4X"}}}]')


def test_min_max_where_a_range_allows_them_and_nowhere_else():
    # a scheme's bounds (text and JSON) take them, as damo's
    (s,) = parse_schemes("min max min max min max stat", "text")
    assert (s.pattern.min_sz_bytes, s.pattern.max_sz_bytes, s.pattern.max_age) == (
        0,
        ULONG_MAX,
        ULONG_MAX,
    )
    # a module parameter has bounds of its own
    with pytest.raises(ParamError, match="parameter min_age: 'max' is not allowed here"):
        load_module("reclaim")(min_age="max")


@pytest.mark.parametrize("option", ["-s", "-a", "-u", "--sim_size"])
def test_cli_options_refuse_min_and_max_in_one_line(option):
    out = subprocess.run(
        [sys.executable, "-m", "pydamon.cli.main", "record", "--sim", "hotcold", option, "max"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert "'max' is not allowed here: min and max only bound a range" in last


def test_module_parameters_take_percentages_for_permil():
    module = load_module("reclaim")(wmarks_high="60%", wmarks_mid="50 %", wmarks_low=200)
    assert (module.p.wmarks_high, module.p.wmarks_mid, module.p.wmarks_low) == (600, 500, 200)
