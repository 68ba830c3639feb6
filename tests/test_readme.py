"""README's Python API example runs as written and does what it says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from pydamon import read_record

README = Path(__file__).resolve().parent.parent / "README.md"


def api_example() -> str:
    text = README.read_text()
    section = text[text.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_is_short_and_runs(tmp_path: Path) -> None:
    code = api_example()
    assert len([line for line in code.splitlines() if line.strip()]) <= 11  # "ten lines"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 31  # one line per aggregation, then the scheme's effect
    assert re.fullmatch(r"paged out [1-9]\d* MiB", lines[-1])
    rec = read_record(tmp_path / "hotcold.rec")
    assert rec.nr_snapshots == 30


def test_aggregations_end_when_the_caller_stops_iterating() -> None:
    import pydamon

    ops = pydamon.select_operations("sim", workloads="hotcold")
    ended: list[int] = []
    ctx = pydamon.Context(ops, [pydamon.Target()], pydamon.Attrs(), seed=3)
    ctx.add_callback("before_terminate", lambda c: ended.append(c.nr_aggregations))
    seen = []
    for snaps in ctx.aggregations():  # no limit: only the caller ends it
        seen.append(snaps[0].end_us)
        if len(seen) == 4:
            break
    assert ended == [4] and not ctx.is_running  # cleaned up at once, not at garbage collection
    assert seen == sorted(seen) and len(set(seen)) == 4
    # the same context runs again afterwards, and ctx.stop() from a callback ends it
    ctx.add_callback("after_aggregation", lambda c: c.stop() if c.nr_aggregations >= 6 else None)
    assert len(list(ctx.aggregations())) == 2


def test_a_callback_returning_true_is_an_error_not_a_silent_stop() -> None:
    import pytest

    import pydamon

    ctx = pydamon.Context(pydamon.SimOperations("hotcold"), [pydamon.Target()], seed=1)
    ctx.add_callback("after_aggregation", lambda c: {}.setdefault("k", 1))
    with pytest.raises(TypeError, match="returned a true value.*ctx.stop"):
        ctx.run(nr_aggregations=3)


def test_the_public_api_is_one_import() -> None:
    import pydamon

    assert set(pydamon.__all__) == set(pydamon._WHERE) | {"__version__"}
    for name in pydamon.__all__:
        assert getattr(pydamon, name) is not None, name
    for needed in ("Context", "Attrs", "Target", "Scheme", "parse_schemes", "Record"):
        assert needed in pydamon.__all__
    assert {"vaddr", "fvaddr", "paddr", "sim"} <= set(pydamon.operations_names())
    assert pydamon.select_operations("sim").name == "sim"
