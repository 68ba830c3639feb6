"""A fake tracefs for host tests: a tree under a temporary directory laid out like the kernel's
(``instances/``, ``events/damon/damon_aggregated/``), whose ``mkdir`` of an instance makes its
files, as tracefs does, and whose ``trace_pipe`` is a real pipe the test writes trace lines into.

Lines are written in the kernel's format (``TP_printk("target_id=%lu nr_regions=%u %lu-%lu: %u
%u")`` after the usual ``comm-pid [cpu] flags timestamp: event:`` prefix), independently of the
parser under test.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pydamon.kernel.tracefs import TracefsIO

INSTANCE_FILES = ("trace_clock", "buffer_size_kb", "tracing_on")
EVENT = "events/damon/damon_aggregated"


def trace_line(
    pid: int, ts: float, target: int, nr: int, start: int, end: int, acc: int, age: int
) -> str:
    return (
        f"       kdamond.0-{pid}    [001] ..... {ts:12.6f}: damon_aggregated: "
        f"target_id={target} nr_regions={nr} {start}-{end}: {acc} {age}"
    )


def aggregation_lines(
    pid: int, ts: float, regions_per_target: list[list[tuple[int, int, int, int]]]
) -> list[str]:
    """The lines the kdamond traces at the end of one aggregation."""
    lines = []
    for t, regions in enumerate(regions_per_target):
        for start, end, acc, age in regions:
            lines.append(trace_line(pid, ts, t, len(regions), start, end, acc, age))
    return lines


@dataclass
class FakeTracefs(TracefsIO):
    root: Path
    #: Lines waiting for the next trace_pipe opened (written to it then), and later ones.
    pending: list[str] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    _writers: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        (self.root / "instances").mkdir(parents=True, exist_ok=True)
        self._event_files(self.root)
        (self.root / "trace_pipe").write_text("")

    def _event_files(self, d: Path) -> None:
        (d / EVENT).mkdir(parents=True, exist_ok=True)
        (d / EVENT / "enable").write_text("0\n")
        (d / EVENT / "filter").write_text("none\n")

    def mkdir(self, path: str) -> None:
        p = Path(path)
        if p.parent != self.root / "instances":
            raise PermissionError(1, "Operation not permitted", path)
        p.mkdir()  # FileExistsError as tracefs
        for name in INSTANCE_FILES:
            (p / name).write_text("0\n")
        (p / "trace_clock").write_text("[local] global mono\n")
        (p / "trace_pipe").write_text("")
        self._event_files(p)

    def rmdir(self, path: str) -> None:
        w = self._writers.pop(path, None)
        if w is not None:
            os.close(w)
        shutil.rmtree(path)
        self.removed.append(path)

    def write(self, path: str, value: str) -> None:
        if not os.path.isfile(path):
            raise FileNotFoundError(2, "No such file or directory", path)
        Path(path).write_text(value + "\n")

    def open_pipe(self, path: str) -> int:
        instance = os.path.dirname(path)
        r, w = os.pipe()
        os.set_blocking(r, False)
        self._writers[instance] = w
        self.opened.append(instance)
        if self.pending:
            self.emit(self.pending)
            self.pending = []
        return r

    def emit(self, lines: list[str]) -> None:
        """Write lines to every open instance's pipe."""
        for w in self._writers.values():
            os.write(w, "".join(line + "\n" for line in lines).encode())

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()

    def close(self) -> None:
        for w in self._writers.values():
            os.close(w)
        self._writers.clear()


def fake_tracefs(tmp_path: Path) -> FakeTracefs:
    return FakeTracefs(root=tmp_path / "tracing")
