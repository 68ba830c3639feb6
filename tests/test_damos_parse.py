"""Scheme files: the single-line text form, damo's JSON/YAML form, round trips, errors, fuzz."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pydamon.core import Attrs
from pydamon.damos import (
    ULONG_MAX,
    AccessPattern,
    Action,
    AgeUnit,
    Filter,
    FilterType,
    GoalMetric,
    NrAccessesUnit,
    Quota,
    QuotaGoal,
    Scheme,
    SchemeFileError,
    Watermarks,
    WmarkMetric,
    dump_schemes,
    format_scheme_line,
    load_schemes,
    parse_scheme_line,
    parse_schemes,
)
from pydamon.units import parse_duration, parse_size

K, M, G = 1 << 10, 1 << 20, 1 << 30


def config(s: Scheme) -> tuple:
    """What a scheme file says (not the run-time state)."""
    return (
        s.pattern,
        str(s.action),
        s.apply_interval_us,
        s.quota,
        s.wmarks,
        s.filters,
        s.target_nid,
    )


def test_seven_field_line():
    s = parse_scheme_line("4K max 0 0 60s max pageout")
    p = s.pattern
    assert (p.min_sz_bytes, p.max_sz_bytes) == (4 * K, ULONG_MAX)
    assert (p.min_nr_accesses, p.max_nr_accesses, p.nr_accesses_unit) == (0, 0, "percent")
    assert (p.min_age, p.max_age, p.age_unit) == (60_000_000, ULONG_MAX, "usec")
    assert s.action == Action.PAGEOUT and not s.quota.is_set
    # 20 samples per aggregation, 100 ms aggregation: kernel units
    attrs = Attrs(sample_interval_us=5000, aggr_interval_us=100_000)
    assert p.resolve(attrs) == (4096, ULONG_MAX, 0, 0, 600, ULONG_MAX)


@pytest.mark.parametrize(
    "line",
    [
        "min  max  80  max  100ms max willneed",
        "min  max  10  20   200ms 1h  cold",
        "2M   max  90  100  100ms max hugepage",
        "2M max min min 7s max nohugepage",
        "4K max 0 0 5s max pageout",
    ],
)
def test_damo_examples_parse(line):
    s = parse_scheme_line(line)
    assert str(s.action) == line.split()[-1]


def test_quota_and_watermark_forms():
    s18 = parse_scheme_line(
        "4K max 0 0 60s max pageout 10ms 128M 1s 0 0 1 free_mem_rate 5s 500 400 200"
    )
    q, w = s18.quota, s18.wmarks
    assert (q.ms, q.sz, q.reset_interval_ms) == (10, 128 * M, 1000)
    assert (q.weight_sz_permil, q.weight_nr_accesses_permil, q.weight_age_permil) == (0, 0, 1)
    assert w == Watermarks(WmarkMetric.FREE_MEM_RATE, 5_000_000, 500, 400, 200)
    s9 = parse_scheme_line("4K max 0 0 60s max pageout 1G 2s")
    assert (s9.quota.ms, s9.quota.sz, s9.quota.reset_interval_ms) == (0, G, 2000)
    s12 = parse_scheme_line("4K max 0 0 60s max pageout 1G 2s 1 2 3")
    assert (s12.quota.weight_sz_permil, s12.quota.weight_age_permil) == (1, 3)
    s17 = parse_scheme_line("4K max 0 0 60s max pageout 1G 2s 1 2 3 free_mem_rate 1s 900 800 100")
    assert s17.wmarks.high == 900 and s17.quota.sz == G


def test_units():
    assert parse_size("1.5K") == 1536
    assert parse_size("2 MiB") == 2 * M
    assert parse_size("1,024") == 1024
    assert parse_size("min", allow_keywords=True) == 0
    assert parse_size("max", allow_keywords=True) == ULONG_MAX
    assert parse_duration("1h 30m") == 5400 * 10**6
    assert parse_duration("2d") == 2 * 86400 * 10**6
    assert parse_duration("250") == 250
    assert parse_duration("3 ms", "ms", default_unit="us") == 3
    assert parse_duration("10", "ms", default_unit="ms") == 10


def test_text_with_comments_and_blank_lines():
    text = """
    # proactive reclaim
    4K max 0 0 60s max pageout   # cold for a minute

    2M max 90 100 100ms max hugepage
    """
    schemes = parse_schemes(text)
    assert [str(s.action) for s in schemes] == ["pageout", "hugepage"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("4K max 0 0 60s max", "<schemes>:1: expected 7, 9, 12, 17 or 18 fields, got 6"),
        ("4X max 0 0 60s max pageout", "<schemes>:1: field 1 (min size) '4X': unknown size unit"),
        ("4K max 0 0 60q max pageout", "<schemes>:1: field 5 (min age) '60q': unknown time unit"),
        ("4K max 0 x 60s max pageout", "<schemes>:1: field 4 (max frequency) 'x': not a percent"),
        ("4K max 0 0 60s max pagein", "<schemes>:1: field 7 (action) 'pagein': unknown action"),
        (
            "# c\n\n8K 4K 0 0 1s max stat",
            "<schemes>:3: field 1 (min size): access pattern size range is empty",
        ),
        (
            "4K max 0 0 1s max stat 1G 1s 0 0 0 free_mem_rate 1s 100 200 50",
            "<schemes>:1: field 15 (high watermark): watermarks must satisfy high >= mid >= low",
        ),
        (
            "4K max 0 0 1s max stat 1G 1s 0 0 0 freemem 1s 500 400 200",
            "<schemes>:1: field 13 (watermark metric) 'freemem'",
        ),
        ("4K max -1 0 1s max stat", "<schemes>:1: field 3 (min frequency) '-1'"),
    ],
)
def test_errors_name_line_and_field(text, message):
    with pytest.raises(SchemeFileError) as info:
        parse_schemes(text, "text")
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_damo_json_example():
    # damo's tests/schemes/prcl_damos.json
    doc = """[{"access_pattern": {"sz_bytes": {"min": "min", "max": "max"},
        "nr_accesses_unit": "percent", "nr_accesses": {"min": "min", "max": "min"},
        "age_unit": "usec", "age": {"min": "1s", "max": "max"}},
      "action": "pageout"}]"""
    (s,) = parse_schemes(doc)
    p = s.pattern
    assert (p.min_nr_accesses, p.max_nr_accesses, p.min_age, p.max_age) == (0, 0, 10**6, ULONG_MAX)
    assert s.action == "pageout"


def test_damo_human_readable_json():
    # what `damo args damon --format json` writes (non-raw): units, commas, percents
    kv = {
        "action": "pageout",
        "access_pattern": {
            "sz_bytes": {"min": "4.000 KiB", "max": "max"},
            "nr_accesses": {"min": "0 %", "max": "5 %"},
            "age": {"min": "1 m 30 s", "max": "max"},
        },
        "apply_interval_us": "0 ns",
        "quotas": {
            "time_ms": "10 ms",
            "sz_bytes": "128.000 MiB",
            "reset_interval_ms": "1 s",
            "goals": [
                {
                    "metric": "some_mem_psi_us",
                    "nid": None,
                    "target_value": "1 ms",
                    "current_value": "0",
                }
            ],
            "effective_sz_bytes": "0 B",
            "weights": {"sz_permil": "0 %", "nr_accesses_permil": "0 %", "age_permil": "100 %"},
        },
        "watermarks": {
            "metric": "free_mem_rate",
            "interval_us": "5 s",
            "high_permil": "50 %",
            "mid_permil": "40 %",
            "low_permil": "20 %",
        },
        "filters": [
            {
                "filter_type": "anon",
                "matching": True,
                "allow": False,
                "memcg_path": None,
                "address_range": None,
                "damon_target_idx": None,
                "hugepage_size": None,
            },
            {
                "filter_type": "addr",
                "matching": False,
                "allow": False,
                "address_range": {"start": "0x1000", "end": "8,192"},
            },
        ],
    }
    (s,) = parse_schemes(json.dumps({"schemes": [kv]}))
    assert s.pattern.min_sz_bytes == 4096 and s.pattern.min_age == 90_000_000
    assert s.pattern.max_nr_accesses == 5
    assert (s.quota.ms, s.quota.sz, s.quota.reset_interval_ms) == (10, 128 * M, 1000)
    assert s.quota.weight_age_permil == 1000
    assert s.quota.goals == [QuotaGoal(GoalMetric.SOME_MEM_PSI_US, target_value=1000)]
    assert (s.wmarks.high, s.wmarks.mid, s.wmarks.low) == (500, 400, 200)
    assert s.filters[1] == Filter(FilterType.ADDR, matching=False, addr_start=4096, addr_end=8192)


def test_kdamonds_document_and_kernel_units():
    doc = {
        "kdamonds": [
            {
                "contexts": [
                    {
                        "schemes": [
                            {
                                "action": "stat",
                                "access_pattern": {
                                    "nr_accesses": {"min": "5 samples", "max": "max"},
                                    "age": {"min": "3 aggr_intervals", "max": "max"},
                                },
                            }
                        ]
                    }
                ]
            }
        ]
    }
    (s,) = parse_schemes(json.dumps(doc))
    assert s.pattern.nr_accesses_unit == NrAccessesUnit.SAMPLES
    assert s.pattern.age_unit == AgeUnit.AGGR_INTERVALS
    assert (s.pattern.min_nr_accesses, s.pattern.min_age) == (5, 3)


def rich_scheme() -> Scheme:
    return Scheme(
        AccessPattern(
            4 * K, 2 * G, 0, 10, NrAccessesUnit.PERCENT, 5_000_000, ULONG_MAX, AgeUnit.USEC
        ),
        Action.PAGEOUT,
        apply_interval_us=200_000,
        quota=Quota(
            ms=10,
            sz=64 * M,
            reset_interval_ms=1000,
            weight_age_permil=1000,
            goals=[
                QuotaGoal(GoalMetric.NODE_MEMCG_FREE_BP, 2000, nid=0, path="/w"),
                QuotaGoal(GoalMetric.USER_INPUT, 10000, current_value=5000),
            ],
        ),
        wmarks=Watermarks(WmarkMetric.FREE_MEM_RATE, 1_000_000, 500, 400, 100),
        filters=[
            Filter(FilterType.MEMCG, allow=True, memcg_path="/w"),
            Filter(FilterType.ADDR, matching=False, addr_start=0x1000, addr_end=0x9000),
            Filter(FilterType.TARGET, target_idx=1),
            Filter(FilterType.HUGEPAGE_SIZE, min_sz=2 * M, max_sz=2 * M),
            Filter(FilterType.YOUNG),
        ],
    )


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_json_and_yaml_round_trip(fmt):
    schemes = [rich_scheme(), parse_scheme_line("2M max 90 100 100ms max hugepage")]
    text = dump_schemes(schemes, fmt)
    again = parse_schemes(text)
    assert [config(s) for s in again] == [config(s) for s in schemes]
    assert dump_schemes(again, fmt) == text


def test_text_json_text_round_trip():
    text = (
        "4K max 0 0 1m max pageout\n"
        "2M max 90 100 100ms max hugepage 10ms 1G 1s 0 3 7 free_mem_rate 5s 500 400 200\n"
        "min max 12.5 max min 1h stat\n"
    )
    schemes = parse_schemes(text)
    assert dump_schemes(schemes, "text") == text
    via_json = parse_schemes(dump_schemes(schemes, "json"))
    assert [config(s) for s in via_json] == [config(s) for s in schemes]
    assert dump_schemes(via_json, "text") == text


def test_text_form_refuses_what_it_cannot_say():
    with pytest.raises(SchemeFileError, match="use JSON or YAML"):
        dump_schemes([rich_scheme()], "text")
    kernel_units = Scheme(AccessPattern(max_nr_accesses=0, min_age=50), Action.PAGEOUT)
    with pytest.raises(SchemeFileError, match="monitoring attributes"):
        dump_schemes([kernel_units], "text")
    attrs = Attrs(sample_interval_us=5000, aggr_interval_us=100_000)
    assert format_scheme_line(kernel_units, attrs) == "min max 0 0 5s max pageout"


@pytest.mark.parametrize(
    "doc, message",
    [
        ('[{"action": "pageout",', "invalid JSON at line 1"),
        ('{"foo": 1}', "top level: expected a list of schemes"),
        ('[{"action": "fly"}]', "[0].action: 'fly': unknown action"),
        (
            '[{"access_pattern": {"sz_bytes": {"min": "4Q"}}}]',
            "[0].access_pattern.sz_bytes.min: '4Q': unknown size unit",
        ),
        (
            '[{"filters": [{"filter_type": "addr"}]}]',
            "[0].filters[0].address_range: an addr filter needs an address_range",
        ),
        (
            '[{"quotas": {"goals": [{"metric": "bogus", "target_value": 1}]}}]',
            "[0].quotas.goals[0].metric: 'bogus': unknown quota goal metric",
        ),
        (
            '[{"quotas": {"goals": [{"metric": "user_input", "target_value": 0}]}}]',
            "[0].quotas.goals[0].target_value: quota goal user_input needs a positive target value",
        ),
        (
            '[{"watermarks": {"metric": "free_mem_rate", "high_permil": 1, "mid_permil": 2}}]',
            "[0].watermarks: watermarks must satisfy high >= mid >= low",
        ),
        ("schemes:\n  - action: [1, 2]", "schemes[0].action"),
        ("- action: pageout\n   bad: [", "invalid YAML at line"),
    ],
)
def test_document_errors_name_the_path(doc, message):
    with pytest.raises(SchemeFileError) as info:
        parse_schemes(doc, source="f")
    assert message in str(info.value) and str(info.value).startswith("f: ")
    assert "\n" not in str(info.value)


def test_load_schemes_from_files(tmp_path):
    (tmp_path / "a.txt").write_text("4K max 0 0 60s max pageout\n")
    (tmp_path / "b.json").write_text(dump_schemes([rich_scheme()], "json"))
    (tmp_path / "c.yaml").write_text(dump_schemes([rich_scheme()], "yaml"))
    assert load_schemes(str(tmp_path / "a.txt"))[0].action == "pageout"
    assert config(load_schemes(str(tmp_path / "b.json"))[0]) == config(rich_scheme())
    assert config(load_schemes(str(tmp_path / "c.yaml"))[0]) == config(rich_scheme())
    with pytest.raises(SchemeFileError, match="cannot read scheme file"):
        load_schemes(str(tmp_path / "missing.txt"))
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SchemeFileError, match="not UTF-8"):
        load_schemes(str(tmp_path / "bin.txt"))


def test_bad_file_gives_one_line_and_no_traceback(tmp_path):
    bad = tmp_path / "s.txt"
    bad.write_text("4K max 0 0 60s max pageout\n4K max 0 0 60s\n")
    code = (
        "import sys\nfrom pydamon.damos import load_schemes, SchemeFileError\n"
        "try:\n    load_schemes(sys.argv[1])\n"
        "except SchemeFileError as e:\n    print(e)\n    sys.exit(2)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr == ""
    assert (
        out.stdout.strip() == f"{bad}:2: expected 7, 9, 12, 17 or 18 fields, got 5: "
        "'4K max 0 0 60s'"
    )


# -- fuzz -----------------------------------------------------------------------------------------

TOKENS = st.sampled_from(
    [
        "min",
        "max",
        "0",
        "4K",
        "2M",
        "1.5G",
        "-1",
        "60s",
        "100ms",
        "1h",
        "%",
        "80%",
        "pageout",
        "stat",
        "free_mem_rate",
        "none",
        "1e400",
        "nan",
        "inf",
        "0x10",
        "1,0",
        "#",
        "10 s",
        "x",
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(TOKENS, max_size=20).map(" ".join), max_size=4).map("\n".join))
def test_fuzz_text_only_raises_scheme_file_error(text):
    try:
        schemes = parse_schemes(text, "text")
    except SchemeFileError as err:
        assert "\n" not in str(err)
        return
    for s in schemes:
        assert parse_schemes(dump_schemes([s], "json"))[0].pattern == s.pattern


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_any_text_only_raises_scheme_file_error(text):
    try:
        parse_schemes(text)
    except SchemeFileError as err:
        assert "\n" not in str(err)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | TOKENS
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "action",
                    "access_pattern",
                    "sz_bytes",
                    "nr_accesses",
                    "age",
                    "min",
                    "max",
                    "quotas",
                    "goals",
                    "metric",
                    "target_value",
                    "watermarks",
                    "filters",
                    "filter_type",
                    "address_range",
                    "start",
                    "end",
                    "weights",
                    "hugepage_size",
                    "schemes",
                    "kdamonds",
                    "contexts",
                    "matching",
                    "allow",
                    "memcg_path",
                    "damon_target_idx",
                    "nr_accesses_unit",
                    "age_unit",
                    "interval_us",
                    "high_permil",
                    "time_ms",
                    "apply_interval_us",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(JSON_VALUES)
def test_fuzz_json_documents_only_raise_scheme_file_error(doc):
    try:
        text = json.dumps(doc)
    except ValueError:
        return
    try:
        parse_schemes(text, "json")
    except SchemeFileError as err:
        assert "\n" not in str(err)
